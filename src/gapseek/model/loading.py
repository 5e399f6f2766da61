"""Stage 3 — the pretrained model, loaded safely: the checkpoint read with ``torch.load(..., weights_only=True)``
(never unpickled), its sha256 and atom_init.json's checked against the published ones, the embedding table
validated, the state dict loaded strictly into :class:`~gapseek.model.cgcnn.CGCNN`."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gapseek.errors import ChecksumError, ModelError
from gapseek.fsutil import sha256_file
from gapseek.model.cgcnn import CGCNN
from gapseek.model.hub import ATOM_INIT_NAME, CHECKPOINT_NAME, PINNED

__all__ = ["LoadedModel", "load_model", "published_atom_init_sha256", "read_atom_init", "sha256_file"]

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """The model, its atom embedding table and provenance."""

    model: CGCNN
    atom_init: np.ndarray  # 101 x 92 float32, row Z (row 0 and unknown elements are NaN)
    known_elements: frozenset[int]
    checkpoint_sha256: str
    atom_init_sha256: str
    checkpoint_path: Path
    atom_init_path: Path
    epoch: int | None = None


MAX_Z = 118  # the largest atomic number a key of atom_init.json may be


def published_atom_init_sha256(checkpoint_sha256: str | None) -> str | None:
    """The sha256 of the atom_init.json published with the checkpoint of sha256 ``checkpoint_sha256`` (the pinned
    band-gap model's: :data:`gapseek.hub.PINNED`), or None for any other checkpoint."""
    if checkpoint_sha256 is not None and checkpoint_sha256.lower() == PINNED[CHECKPOINT_NAME].sha256:
        return PINNED[ATOM_INIT_NAME].sha256
    return None


def load_model(
    checkpoint: str | Path,
    atom_init: str | Path,
    expected_sha256: str | None = None,
    device: str | torch.device = "cpu",
    expected_atom_init_sha256: str | None = "published",
) -> LoadedModel:
    """Load a CGCNN checkpoint safely (``weights_only=True``) and its atom_init.json.

    ``expected_sha256``: when given, a checkpoint with another sha256 is refused with :class:`ChecksumError`.
    ``expected_atom_init_sha256``: likewise for atom_init.json (None: not checked). The default, "published",
    expects the atom_init.json published with the checkpoint when ``expected_sha256`` is the pinned band-gap
    model's (so the CLI's default, which pins the checkpoint, pins both files; ``--model-sha256 any`` neither),
    and checks nothing otherwise. A malformed atom_init.json is a :class:`ModelError` saying what is wrong.
    """
    checkpoint = Path(checkpoint)
    atom_init = Path(atom_init)
    for p in (checkpoint, atom_init):
        if not p.is_file():
            raise ModelError(f"model file not found: {p}")
    digest = sha256_file(checkpoint)
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise ChecksumError(
            f"{checkpoint} has sha256 {digest}, expected {expected_sha256}; "
            "pass --model-sha256 any to use a different checkpoint on purpose"
        )
    atom_init_digest = sha256_file(atom_init)
    if expected_atom_init_sha256 == "published":
        expected_atom_init_sha256 = published_atom_init_sha256(expected_sha256)
    if expected_atom_init_sha256 is not None and atom_init_digest != expected_atom_init_sha256.lower():
        raise ChecksumError(
            f"{atom_init} has sha256 {atom_init_digest}, expected {expected_atom_init_sha256} (the atom_init.json "
            "published with this checkpoint): a changed embedding silently changes every prediction; pass "
            "--model-sha256 any to use a different atom_init.json on purpose"
        )
    try:
        ck = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError...
        raise ModelError(f"cannot read checkpoint {checkpoint} safely: {type(exc).__name__}: {exc}") from None
    if not isinstance(ck, dict) or "state_dict" not in ck:
        raise ModelError(f"{checkpoint} is not a CGCNN checkpoint (no state_dict)")
    args = ck.get("args") or {}
    if args.get("task", "regression") != "regression":
        raise ModelError(f"{checkpoint} is a {args.get('task')} model; gapseek needs a regression model")
    state = ck["state_dict"]
    try:
        init = dict(
            orig_atom_fea_len=int(state["embedding.weight"].shape[1]),
            nbr_fea_len=int(state["convs.0.fc_full.weight"].shape[1] - 2 * state["embedding.weight"].shape[0]),
            atom_fea_len=int(state["embedding.weight"].shape[0]),
            n_conv=int(args.get("n_conv", sum(1 for k in state if k.endswith("fc_full.weight")))),
            h_fea_len=int(state["conv_to_fc.weight"].shape[0]),
            n_h=int(args.get("n_h", 1)),
        )
    except KeyError as exc:
        raise ModelError(f"{checkpoint}: state_dict lacks {exc}") from None
    model = CGCNN(**init)
    try:
        missing = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise ModelError(f"{checkpoint}: state_dict does not fit CGCNN{init}: {exc}") from None
    extra = [k for k in missing.missing_keys if not k.startswith("norm_")]
    if extra or missing.unexpected_keys:
        raise ModelError(f"{checkpoint}: missing {extra}, unexpected {missing.unexpected_keys}")
    norm = ck.get("normalizer") or {"mean": 0.0, "std": 1.0}
    model.norm_mean.fill_(float(norm["mean"]))
    model.norm_std.fill_(float(norm["std"]))
    model.eval()
    model.to(device)

    dim = init["orig_atom_fea_len"]
    table = read_atom_init(atom_init, dim)
    emb = np.full((max(table) + 1, dim), np.nan, dtype=np.float32)
    for z, v in table.items():
        emb[z] = v.astype(np.float32)
    log.info("loaded %s (sha256 %s, epoch %s)", checkpoint, digest[:12], ck.get("epoch"))
    return LoadedModel(
        model=model,
        atom_init=emb,
        known_elements=frozenset(table),
        checkpoint_sha256=digest,
        atom_init_sha256=atom_init_digest,
        checkpoint_path=checkpoint,
        atom_init_path=atom_init,
        epoch=ck.get("epoch"),
    )


def read_atom_init(path: str | Path, dim: int) -> dict[int, np.ndarray]:
    """atom_init.json: a JSON object mapping atomic numbers ("1".."118") to ``dim`` finite numbers each. Anything
    else is a :class:`ModelError` naming the file and what is wrong (never a traceback, nor a table sized by a
    wild key)."""
    path = Path(path)
    bad = f"{path} is not a valid atom_init.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"{bad}: {exc}") from None
    if not isinstance(raw, dict):
        raise ModelError(f"{bad}: it holds a JSON {type(raw).__name__}, not an object mapping atomic numbers to "
                         "feature vectors")
    if not raw:
        raise ModelError(f"{bad}: it maps no element (an empty object)")
    table: dict[int, np.ndarray] = {}
    for key, value in raw.items():
        try:
            z = int(key)
        except ValueError:
            z = -1
        if not 1 <= z <= MAX_Z:
            shown = key if len(key) <= 20 else key[:20] + "..."
            raise ModelError(f"{bad}: key {shown!r} is not an atomic number (1 to {MAX_Z})")
        try:
            vec = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ModelError(f"{bad}: element {z} has features that are not a list of numbers") from None
        if vec.shape != (dim,):
            raise ModelError(f"{path}: element {z} has {vec.shape} features, the model expects {dim}")
        if not np.isfinite(vec).all():
            raise ModelError(f"{bad}: element {z} has features that are not finite numbers")
        table[z] = vec
    return table
