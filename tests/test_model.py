"""The model: safe loading, checksum, and the fast forward pass against the step-by-step original."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import torch
from conftest import EXAMPLES

from gapseek.errors import ChecksumError, ModelError
from gapseek.graph import GraphSettings, build_graph
from gapseek.model import load_model
from gapseek.model.collate import collate
from gapseek.structure.cif import read_crystal


def test_checkpoint_loads_strictly_with_the_published_hyperparameters(loaded_model):
    m = loaded_model.model
    assert m.init_args == dict(orig_atom_fea_len=92, nbr_fea_len=41, atom_fea_len=64, n_conv=4, h_fea_len=32, n_h=1)
    assert loaded_model.epoch == 457
    assert float(m.norm_mean) == pytest.approx(2.353832203) and float(m.norm_std) == pytest.approx(1.480239124)


def test_batching_does_not_change_results(loaded_model):
    graphs = [build_graph(read_crystal(f)) for f in sorted(EXAMPLES.glob("*.cif"))[:5] if "disorder" not in f.name]
    together = loaded_model.model(collate(graphs, loaded_model.atom_init, GraphSettings()))[0].numpy()
    alone = [loaded_model.model(collate([g], loaded_model.atom_init, GraphSettings()))[0].item() for g in graphs]
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_wrong_checksum_is_refused(model_dir):
    with pytest.raises(ChecksumError, match="expected 00"):
        load_model(model_dir / "band-gap.pth.tar", model_dir / "atom_init.json", expected_sha256="00" * 32)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_pickle_with_code_is_never_executed(tmp_path, model_dir, capsys):
    bad = tmp_path / "band-gap.pth.tar"
    torch.save({"state_dict": {}, "payload": _Evil()}, bad)
    shutil.copy(model_dir / "atom_init.json", tmp_path / "atom_init.json")
    with pytest.raises(ModelError, match="cannot read checkpoint"):
        load_model(bad, tmp_path / "atom_init.json")
    assert "this must never run" not in capsys.readouterr().out


def test_garbage_checkpoint_is_a_model_error(tmp_path, model_dir):
    bad = tmp_path / "band-gap.pth.tar"
    bad.write_bytes(pickle.dumps([1, 2, 3])[:5])
    with pytest.raises(ModelError):
        load_model(bad, model_dir / "atom_init.json")


def test_one_row_per_class_of_equivalent_atoms_gives_the_every_atom_outputs(loaded_model):
    files = [f for f in sorted(EXAMPLES.glob("*.cif")) if "disorder" not in f.name and "not-a" not in f.name]
    graphs = [build_graph(read_crystal(f)) for f in files]
    gs = GraphSettings()
    full = loaded_model.model(collate(graphs, loaded_model.atom_init, gs, reduce=False))
    reduced_batch = collate(graphs, loaded_model.atom_init, gs, reduce=True)
    assert reduced_batch.atom_fea.shape[0] < sum(g.n_atoms for g in graphs)  # fewer rows than atoms
    reduced = loaded_model.model(reduced_batch)
    for a, b in zip(full, reduced):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-6, rtol=0)
