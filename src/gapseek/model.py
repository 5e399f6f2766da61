"""Stage 3 — the pretrained CGCNN band-gap model: safe loading and its forward pass.

:class:`CGCNN` has exactly the parameter names of the original ``CrystalGraphConvNet`` so the published
state dict loads strictly, and its forward pass keeps the original order of float32 operations
(concatenate self, neighbour and bond features, ``fc_full``, batch norm, gate, sum, batch norm, residual
softplus). That order matters: several batch norms of this checkpoint have tiny running variances, which
amplify any reordering of the sums — folding the batch norms into the linear layers and splitting
``fc_full`` by blocks (3x fewer FLOPs) moved outputs by up to 1.5e-4, beyond the 1e-4 parity bar, and was
not faster on a CPU because the elementwise work dominates.

The forward pass returns ``(prediction, pooled, hidden)``: ``B`` band gaps in eV, the ``B x 64`` mean-pooled
atom vectors after the convolutions and the ``B x 32`` ``softplus(conv_to_fc(softplus(pooled)))`` vectors.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gapseek.errors import ChecksumError, ModelError

__all__ = ["CGCNN", "Batch", "LoadedModel", "load_model", "published_atom_init_sha256", "read_atom_init",
           "sha256_file"]

log = logging.getLogger(__name__)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class Batch:
    """A batch of crystal graphs, flattened.

    Attributes:
        atom_fea: ``N x 92`` float32 atom_init vectors.
        bond_fea: ``N x M x K`` float32 Gaussian-expanded distances.
        nbr_idx: ``N x M`` int64 neighbour indices into the batch's atoms.
        crystal_idx: ``N`` int64 crystal index of each atom.
        n_crystals: ``B``.
        atom_weight: ``N`` float32 number of atoms each row stands for, when a row represents a class of
            equivalent atoms (:func:`gapseek.graph.equivalent_atoms`); None when every row is one atom.
        crystal_atoms: ``B`` float32 atoms per crystal (the sums of ``atom_weight``); None with it.
    """

    atom_fea: torch.Tensor
    bond_fea: torch.Tensor
    nbr_idx: torch.Tensor
    crystal_idx: torch.Tensor
    n_crystals: int
    atom_weight: torch.Tensor | None = None
    crystal_atoms: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(
            self.atom_fea.to(device, non_blocking=True),
            self.bond_fea.to(device, non_blocking=True),
            self.nbr_idx.to(device, non_blocking=True),
            self.crystal_idx.to(device, non_blocking=True),
            self.n_crystals,
            move(self.atom_weight),
            move(self.crystal_atoms),
        )


class _ConvLayer(nn.Module):
    def __init__(self, atom_fea_len: int, nbr_fea_len: int) -> None:
        super().__init__()
        self.atom_fea_len = atom_fea_len
        self.fc_full = nn.Linear(2 * atom_fea_len + nbr_fea_len, 2 * atom_fea_len)
        self.bn1 = nn.BatchNorm1d(2 * atom_fea_len)
        self.bn2 = nn.BatchNorm1d(atom_fea_len)

    def forward(self, x: torch.Tensor, total: torch.Tensor, nbr_idx: torch.Tensor) -> torch.Tensor:
        """``N x A -> N x A``.

        ``total``: an ``N x M x (2A + K)`` work buffer whose last K columns hold the bond features; the first
        2A are overwritten with the self and neighbour vectors, so the product sees exactly the original's
        ``cat([self, neighbour, bond])`` without rebuilding the bond block in every layer.
        """
        n, m = nbr_idx.shape
        a = self.atom_fea_len
        total[:, :, :a] = x.unsqueeze(1)
        total[:, :, a:2 * a] = x.index_select(0, nbr_idx.reshape(-1)).view(n, m, a)
        gated = self.bn1(self.fc_full(total.view(n * m, -1))).view(n, m, 2 * a)
        filt, core = gated.chunk(2, dim=2)
        summed = self.bn2(torch.sum(torch.sigmoid(filt).mul_(F.softplus(core)), dim=1))
        return F.softplus(x + summed)


class CGCNN(nn.Module):
    """CrystalGraphConvNet (regression, softplus) with the original parameter names."""

    def __init__(
        self,
        orig_atom_fea_len: int = 92,
        nbr_fea_len: int = 41,
        atom_fea_len: int = 64,
        n_conv: int = 4,
        h_fea_len: int = 32,
        n_h: int = 1,
    ) -> None:
        super().__init__()
        self.init_args = dict(
            orig_atom_fea_len=orig_atom_fea_len,
            nbr_fea_len=nbr_fea_len,
            atom_fea_len=atom_fea_len,
            n_conv=n_conv,
            h_fea_len=h_fea_len,
            n_h=n_h,
        )
        self.embedding = nn.Linear(orig_atom_fea_len, atom_fea_len)
        self.convs = nn.ModuleList([_ConvLayer(atom_fea_len, nbr_fea_len) for _ in range(n_conv)])
        self.conv_to_fc = nn.Linear(atom_fea_len, h_fea_len)
        if n_h > 1:
            self.fcs = nn.ModuleList([nn.Linear(h_fea_len, h_fea_len) for _ in range(n_h - 1)])
        self.fc_out = nn.Linear(h_fea_len, 1)
        self.register_buffer("norm_mean", torch.tensor(0.0, dtype=torch.float64))
        self.register_buffer("norm_std", torch.tensor(1.0, dtype=torch.float64))

    # ---------------------------------------------------------------------------------- head
    def _head(self, atom_fea: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b = batch.n_crystals
        pooled = torch.zeros(b, atom_fea.shape[1], dtype=atom_fea.dtype, device=atom_fea.device)
        if batch.atom_weight is None:
            counts = torch.bincount(batch.crystal_idx, minlength=b).to(atom_fea.dtype)
            pooled.index_add_(0, batch.crystal_idx, atom_fea)
        else:
            counts = batch.crystal_atoms.to(atom_fea.dtype)
            pooled.index_add_(0, batch.crystal_idx, atom_fea * batch.atom_weight[:, None].to(atom_fea.dtype))
        pooled = pooled / counts[:, None]
        hidden = F.softplus(self.conv_to_fc(F.softplus(pooled)))
        if hasattr(self, "fcs"):
            for fc in self.fcs:
                hidden = F.softplus(fc(hidden))
        out = self.fc_out(hidden).squeeze(1)
        prediction = out * float(self.norm_std) + float(self.norm_mean)
        return prediction, pooled, hidden

    @torch.no_grad()
    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # type: ignore[override]
        """``-> (B, B x 64, B x 32)``: prediction (eV), pooled and hidden vectors."""
        x = self.embedding(batch.atom_fea)
        n, m, k = batch.bond_fea.shape
        a = x.shape[1]
        total = torch.empty(n, m, 2 * a + k, dtype=x.dtype, device=x.device)
        total[:, :, 2 * a:] = batch.bond_fea
        for conv in self.convs:
            x = conv(x, total, batch.nbr_idx)
        return self._head(x, batch)


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
    from gapseek.hub import ATOM_INIT_NAME, CHECKPOINT_NAME, PINNED

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
