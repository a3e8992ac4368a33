"""Spiking sparse conv blocks (E-3DSNN): spikes come *before* each convolution, residuals add pre-spike values.

    SpikeConv        neuron -> sparse conv -> norm           the unit of every spiking network
    SpikingBlock     x + SpikeConv(SpikeConv(x))            (shortcut: Linear + norm when the width changes)

`neuron` is a factory: MultiSpike (spike counts 0..4) for the spiking network, nn.ReLU for its ANN twin of
the same widths (the reference of the energy comparison), nn.Identity for an encoding layer whose input is
real valued (the first conv over the voxel features: Spike Voxel Coding turns its output into spikes at the
next neuron). A SpikeConv after a spiking neuron skips all-zero input rows in the native engine (same
outputs, less work: the silent sites of a spiking layer cost nothing).

Measurement. In eval mode inside `pc3d.engine.evaluator.measuring(model)` (evaluation opens it; inference
does not) every SpikeConv counts, per sample of the batch, what the energy model needs
(pc3d.eval.energy): neurons and spikes at its input, the active pairs of its conv as multiply-accumulates
of the ReLU twin (pairs x Cin x Cout / groups) and as synaptic operations of the spiking network (each
pair's input spike count x Cout / groups). `pop_measurements()` hands them over, one dict per sample
(pc3d.engine.evaluator attaches them to the predictions).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from pc3d.models.backbones3d.blocks import BATCH_NORM, Norm, sparse_conv
from pc3d.models.snn.neuron import MultiSpike
from pc3d.sparse import SparseModule, SparseSequential, SparseTensor

Neuron = Callable[[], nn.Module]


def conv_counts(spikes: torch.Tensor, in_sample: torch.Tensor, nbr: torch.Tensor, out_sample: torch.Tensor,
                batch_size: int, out_channels: int, groups: int = 1) -> dict[str, torch.Tensor]:
    """Per-sample counts [B] (float64) of one conv: its input `spikes` [N_in, Cin] (sample of each row:
    in_sample), its neighbour table nbr [N_out, K] (input row or -1; sample of each output row: out_sample).

    neurons  N_in x Cin;  spikes  sum of the inputs;  active  inputs > 0
    macs     active pairs x Cin x Cout / groups      (the same conv after a ReLU: every pair multiplies)
    sops     sum over pairs of the input row's spike total x Cout / groups   (accumulates of a spiking conv)
    """
    n_in, cin = spikes.shape
    cout_g = out_channels // groups
    s = spikes.detach().double()
    row_total = torch.cat([s.new_zeros(1), s.sum(1)])  # row -1 (no pair) reads 0
    valid = nbr >= 0

    def per_sample(values: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        return torch.bincount(sample, weights=values, minlength=batch_size).double()

    return {"neurons": per_sample(torch.full((n_in,), float(cin), dtype=torch.float64), in_sample),
            "spikes": per_sample(row_total[1:], in_sample),
            "active": per_sample((s > 0).sum(1).double(), in_sample),
            "macs": per_sample(valid.sum(1).double() * cin * cout_g, out_sample),
            "sops": per_sample(row_total[nbr + 1].sum(1) * cout_g, out_sample)}


class SpikeConv(SparseModule):
    """neuron -> sparse conv (kind 'subm', 'spconv' or 'inverseconv') -> norm; [N, in] -> [N', out].
    The signature of backbones3d.blocks.post_act_block, with `neuron` for `act` (norm=None: no norm)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, indice_key: str | None = None,
                 stride=1, padding=0, conv_type: str = "subm", ndim: int = 3, neuron: Neuron = MultiSpike,
                 norm: Norm | None = BATCH_NORM):
        super().__init__()
        self.neuron = neuron()
        self.spiking = bool(getattr(self.neuron, "spiking", False))
        self.conv = sparse_conv(conv_type, ndim, in_channels, out_channels, kernel_size, indice_key, stride, padding)
        self.conv.skip_zero_rows = self.spiking
        self.norm = norm(out_channels) if norm is not None else nn.Identity()
        self.measuring = False  # set by pc3d.engine.evaluator.measuring
        self._measured: dict[str, torch.Tensor] | None = None

    def forward(self, x: SparseTensor) -> SparseTensor:
        s = x.replace_feature(self.neuron(x.feats))
        y = self.conv(s)
        if self.measuring and not self.training:
            self._measure(s, y)
        return y.replace_feature(self.norm(y.feats))

    def _measure(self, s: SparseTensor, y: SparseTensor) -> None:
        kmap, inverse = self.conv.kernel_map(s)  # cached by the conv: no second build
        nbr = torch.from_numpy(kmap.table(transposed=inverse)).long()
        counts = conv_counts(s.feats.cpu(), s.coords[:, 0].long().cpu(), nbr, y.coords[:, 0].long().cpu(),
                             s.batch_size, self.conv.out_channels, self.conv.groups)
        counts["spiking"] = torch.full((s.batch_size,), float(self.spiking), dtype=torch.float64)
        self._measured = counts

    def pop_measurements(self) -> list[dict[str, float]] | None:
        """The last eval batch's counts, one dict per sample (None when nothing was measured since)."""
        counts, self._measured = self._measured, None
        if counts is None:
            return None
        columns = {key: value.tolist() for key, value in counts.items()}
        return [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]


class SpikingBlock(SparseModule):
    """x + norm(conv(spike(norm(conv(spike(x)))))): two SubM 3^ndim SpikeConvs on one set of sites, the
    residual on the pre-spike values (a Linear + norm shortcut when in_channels != out_channels)."""

    def __init__(self, in_channels: int, out_channels: int | None = None, indice_key: str | None = None,
                 ndim: int = 3, neuron: Neuron = MultiSpike, norm: Norm = BATCH_NORM):
        super().__init__()
        out_channels = out_channels or in_channels
        self.conv1 = SpikeConv(in_channels, out_channels, 3, indice_key, padding=1, ndim=ndim, neuron=neuron,
                               norm=norm)
        self.conv2 = SpikeConv(out_channels, out_channels, 3, indice_key, padding=1, ndim=ndim, neuron=neuron,
                               norm=norm)
        self.shortcut = (SparseSequential() if in_channels == out_channels else
                         SparseSequential(nn.Linear(in_channels, out_channels, bias=False), norm(out_channels)))

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = self.conv2(self.conv1(x))
        return out.replace_feature(out.feats + self.shortcut(x).feats)
