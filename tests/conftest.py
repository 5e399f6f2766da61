"""Shared fixtures. Data from ../shared is read in place; tests that need it skip with a clear message."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # original_cgcnn: the original code's graph construction
SHARED = Path(os.environ.get("GAPSEEK_SHARED", ROOT.parent / "shared"))
MODEL_DIR = SHARED / "models" / "cgcnn"
MP_DIR = SHARED / "data" / "mp-gap-36k"
COD_DIR = SHARED / "data" / "cod-robustness"
REFERENCE = SHARED / "reference"
EXAMPLES = ROOT / "src" / "gapseek" / "data" / "examples"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent: this test reads the shared data set (../shared beside the repo)")
    return path


@pytest.fixture(scope="session")
def model_dir() -> Path:
    return need(MODEL_DIR)


@pytest.fixture(scope="session")
def loaded_model(model_dir):
    from gapseek.model import load_model
    from gapseek.model.hub import PINNED

    return load_model(model_dir / "band-gap.pth.tar", model_dir / "atom_init.json",
                      expected_sha256=PINNED["band-gap.pth.tar"].sha256)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A small CGCNN checkpoint with random weights (not the published model: use it with --model-sha256 any)
    and an 8-feature atom_init.json; it needs no shared data."""
    import json

    import numpy as np
    import torch

    from gapseek.model import CGCNN

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("tiny-model")
    model = CGCNN(orig_atom_fea_len=8, atom_fea_len=64, n_conv=1, h_fea_len=32)
    torch.save({"state_dict": model.state_dict(), "args": {"task": "regression", "n_conv": 1, "n_h": 1},
                "normalizer": {"mean": 2.0, "std": 1.0}, "epoch": 0}, d / "band-gap.pth.tar")
    rng = np.random.default_rng(0)
    (d / "atom_init.json").write_text(json.dumps({str(z): rng.random(8).round(4).tolist() for z in range(1, 101)}))
    return d


def run_interrupted(args: list[str], crash_at: int, monkeypatch) -> int:
    """``gapseek ARGS`` (a simulated search), interrupted as if by Ctrl-C when it records its ``crash_at``-th
    measured trial; returns its exit status. Recording works normally again afterwards."""
    from gapseek.cli import main
    from gapseek.search.campaign import Campaign

    real = Campaign.record
    seen = {"oracle": 0}

    def crash(self, pool, measured, source):
        if source == "oracle":
            seen["oracle"] += 1
            if seen["oracle"] == crash_at:
                raise KeyboardInterrupt
        return real(self, pool, measured, source)

    monkeypatch.setattr(Campaign, "record", crash)
    try:
        return main(args)
    finally:
        monkeypatch.setattr(Campaign, "record", real)


@pytest.fixture(autouse=True)
def _quiet_pymatgen():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="pymatgen")
        warnings.filterwarnings("ignore", message=".*fractional coordinates rounded.*")
        yield


def write_cif(path: Path, sg: str, cell: tuple, sites: list[tuple], name: str = "x", extra: str = "") -> Path:
    """A small CIF: ``sites`` = (label, symbol, x, y, z, occupancy)."""
    a, b, c, al, be, ga = cell
    lines = [f"data_{name}", f"_symmetry_space_group_name_H-M '{sg}'",
             f"_cell_length_a {a}", f"_cell_length_b {b}", f"_cell_length_c {c}",
             f"_cell_angle_alpha {al}", f"_cell_angle_beta {be}", f"_cell_angle_gamma {ga}", extra,
             "loop_", "_atom_site_label", "_atom_site_type_symbol", "_atom_site_fract_x", "_atom_site_fract_y",
             "_atom_site_fract_z", "_atom_site_occupancy"]
    lines += [" ".join(str(v) for v in s) for s in sites]
    path.write_text("\n".join(lines) + "\n")
    return path
