"""Spiking sparse conv blocks (E-3DSNN): spikes come *before* each convolution, residuals add pre-spike values.

    SpikeConv        neuron -> sparse conv -> norm           the unit of every spiking network
    SpikingBlock     x + SpikeConv(SpikeConv(x))            (shortcut: Linear + norm when the width changes)
    SpikingBasicBlock  y = x + SpikeConv(x), then SpikingBlock(y): E-3DSNN's BasicBlock (three convs)
    SpikingFuse      up + two 1x1 SpikeConvs of cat(up, skip): E-3DSNN's decoder stage after the inverse conv

`neuron` is a factory: MultiSpike (spike counts 0..4) for the spiking network, nn.ReLU for its ANN twin of
the same widths (the reference of the energy comparison), nn.Identity for an encoding layer whose input is
real valued (the first conv over the voxel features: Spike Voxel Coding turns its output into spikes at the
next neuron). A SpikeConv after a spiking neuron skips all-zero input rows in the native engine (same
outputs, less work: the silent sites of a spiking layer cost nothing).

Measurement. In eval mode inside `pc3d.engine.evaluator.measuring(model)` (evaluation opens it; inference
does not) every SpikeConv counts, per sample of the batch, what the energy model needs
(pc3d.eval.energy): neurons and spikes at its input, the active pairs of its conv as multiply-accumulates
of the ReLU twin (pairs x Cin x Cout / groups) and as synaptic operations of the spiking network (each
pair's input spike count x Cout / groups). The counts of every call inside one measuring block add up (test-time
augmentation runs the network once per view: all views are counted, the energy of what ran); a new block starts
from zero. `pop_measurements()` hands them over, one dict per sample (pc3d.engine.evaluator attaches them to the
predictions). The counts are taken over the conv's kernel map whichever backend ran it: the native engine's own
map, or under spconv (which keeps its maps to itself) one built here from the sites (`counting_table`).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from pc3d.errors import ConfigError, SparseTensorError
from pc3d.models.backbones3d.blocks import BATCH_NORM, Norm, sparse_conv
from pc3d.models.snn.neuron import MultiSpike
from pc3d.sparse import SparseConvolution, SparseModule, SparseSequential, SparseTensor
from pc3d.sparse.backend import resolve
from pc3d.sparse.conv import cached_map
from pc3d.sparse.kernel_map import strided_map, submanifold_map
from pc3d.sparse.tensor import site_rows

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


COUNTING = "counting map"  # key prefix of the maps built for counting (SparseTensor.maps / indice_dict)


def counting_table(conv: SparseConvolution, s: SparseTensor, y: SparseTensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(nbr int64 [N_out, K]: the input row of s read by offset k of output row o, -1 for none; the sample of each
    output row) of conv run on s giving y, whichever backend ran it. The native engine's own map when it ran the
    conv (cached: no second build); otherwise built from the sites with pc3d.sparse's map builders: a SubM / strided
    / transposed conv's map from s, an inverse conv's the strided map of its paired conv (same indice_key, geometry
    recorded when that conv was counted) from y's sites, which are the paired conv's input sites, read transposed
    (its output sites matched to the rows of s by coordinates, so the backend's row order does not matter)."""
    if not (conv.subm or conv.inverse or conv.transposed) and conv.indice_key:  # for the inverse conv of this key
        s.indice_dict[(COUNTING, conv.indice_key)] = (conv.stride, conv.padding, conv.dilation, conv.generative)
    if resolve(conv.backend, s.device.type, grouped=conv.groups != 1) == "native":
        kmap, inverse = conv.kernel_map(s)
        return torch.from_numpy(kmap.table(transposed=inverse)).long(), y.coords[:, 0].long().cpu()
    if conv.inverse:
        geometry = s.indice_dict.get((COUNTING, conv.indice_key))
        if geometry is None:
            raise SparseTensorError(f"counting inverse conv {conv.indice_key!r}: its paired strided conv was not "
                                    "counted (measure a network whose strided conv is a SpikeConv too)")
        key = (COUNTING, "strided", conv.kernel_size, *geometry)
        kmap = cached_map(y, key, lambda: strided_map(y, conv.kernel_size, *geometry[:3], generative=geometry[3]))
        coarse = site_rows(kmap.out_coords.cpu(), s.coords.cpu())  # row of s of each of the paired conv's output sites
        nbr = torch.from_numpy(kmap.table(transposed=True)).long()
        nbr = torch.where(nbr >= 0, coarse[nbr.clamp(min=0)], nbr)
        return nbr, y.coords[:, 0].long().cpu()
    if conv.subm:
        kmap = cached_map(s, (COUNTING, "subm", conv.kernel_size, conv.dilation),
                          lambda: submanifold_map(s, conv.kernel_size, conv.dilation))
    else:
        geometry = (conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.transposed,
                    conv.output_padding if conv.transposed else None, conv.generative)
        kmap = cached_map(s, (COUNTING, "strided", *geometry),
                          lambda: strided_map(s, *geometry[:6], generative=conv.generative))
    return torch.from_numpy(kmap.table()).long(), kmap.out_coords[:, 0].long().cpu()


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
        self._measured: dict[str, torch.Tensor] | None = None
        self._measuring = False

    @property
    def measuring(self) -> bool:
        """Set by pc3d.engine.evaluator.measuring: count in eval mode. Turning it on starts a block from zero."""
        return self._measuring

    @measuring.setter
    def measuring(self, on: bool) -> None:
        if on and not self._measuring:
            self._measured = None
        self._measuring = bool(on)

    def forward(self, x: SparseTensor) -> SparseTensor:
        s = x.replace_feature(self.neuron(x.feats))
        y = self.conv(s)
        if self.measuring and not self.training:
            self._measure(s, y)
        return y.replace_feature(self.norm(y.feats))

    def _measure(self, s: SparseTensor, y: SparseTensor) -> None:
        nbr, out_sample = counting_table(self.conv, s, y)
        counts = conv_counts(s.feats.cpu(), s.coords[:, 0].long().cpu(), nbr, out_sample, s.batch_size,
                             self.conv.out_channels, self.conv.groups)
        spiking = torch.full((s.batch_size,), float(self.spiking), dtype=torch.float64)
        if self._measured is not None:  # another pass over the same batch (a test-time augmentation view)
            if len(self._measured["spiking"]) != s.batch_size:
                raise ConfigError(f"SpikeConv: one measuring block ran batches of {len(self._measured['spiking'])} "
                                  f"and {s.batch_size} samples; pop the counts between batches")
            counts = {key: self._measured[key] + value for key, value in counts.items()}
        self._measured = counts | {"spiking": spiking}

    def pop_measurements(self) -> list[dict[str, float]] | None:
        """The counts of the measuring block's calls (summed over every pass over the batch), one dict per sample;
        None when nothing was measured since the last pop."""
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


class SpikingBasicBlock(SparseModule):
    """E-3DSNN's BasicBlock as released (three SubM 3^ndim convs on one set of sites, two residuals on pre-spike
    values): y = x + SpikeConv(x), then y + SpikeConv(SpikeConv(y)) (a SpikingBlock). One width in and out
    (out_channels, if given, must equal in_channels: the signature of SpikingBlock)."""

    def __init__(self, in_channels: int, out_channels: int | None = None, indice_key: str | None = None,
                 ndim: int = 3, neuron: Neuron = MultiSpike, norm: Norm = BATCH_NORM):
        super().__init__()
        if out_channels not in (None, in_channels):
            raise ConfigError(f"SpikingBasicBlock keeps its width: {in_channels} in, {out_channels} out")
        channels = in_channels
        self.conv = SpikeConv(channels, channels, 3, indice_key, padding=1, ndim=ndim, neuron=neuron, norm=norm)
        self.block = SpikingBlock(channels, indice_key=indice_key, ndim=ndim, neuron=neuron, norm=norm)

    def forward(self, x: SparseTensor) -> SparseTensor:
        y = self.conv(x)
        return self.block(y.replace_feature(y.feats + x.feats))


class SpikingFuse(SparseModule):
    """E-3DSNN's decoder fusion (its UpBlock after the inverse conv): for x = cat(up, skip) with `up` the first
    out_channels columns, up + norm(W2 spike(norm(W1 spike(x)))), W1 and W2 1x1 SubM SpikeConvs (the released
    Linear layers; their biases, which the BatchNorm after each cancels, left out)."""

    def __init__(self, in_channels: int, out_channels: int, indice_key: str | None = None, ndim: int = 3,
                 neuron: Neuron = MultiSpike, norm: Norm = BATCH_NORM):
        super().__init__()
        if in_channels <= out_channels:
            raise ConfigError(f"SpikingFuse: the concatenation ({in_channels}) must be wider than its output "
                              f"({out_channels}): up first, then the skip")
        key = None if indice_key is None else f"{indice_key}:1x1"
        self.out_channels = out_channels
        self.conv1 = SpikeConv(in_channels, out_channels, 1, key, ndim=ndim, neuron=neuron, norm=norm)
        self.conv2 = SpikeConv(out_channels, out_channels, 1, key, ndim=ndim, neuron=neuron, norm=norm)

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = self.conv2(self.conv1(x))
        return out.replace_feature(out.feats + x.feats[:, :self.out_channels])


RESIDUAL_BLOCKS = {"pair": SpikingBlock, "basic": SpikingBasicBlock}  # pc3d's two convs, E-3DSNN's released three
