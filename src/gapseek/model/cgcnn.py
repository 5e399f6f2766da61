"""Stage 3 — the CGCNN band-gap model's network and its forward pass (loading: :mod:`gapseek.model.loading`).

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

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CGCNN", "Batch"]


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
