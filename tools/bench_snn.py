"""`tools/bench.py snn`: what spike sparsity buys on a CPU. A SubM 3^3 conv (64 -> 64, cached map) over the
voxels of the standard sweep, its input rows spike counts 0..4 with a share of them all zero (silent sites),
run by the native engine with zero-row skipping (pc3d) against the same engine without it (the reference
row: every active pair multiplied, as any other sparse engine does). Each row checks the outputs are
bitwise equal. Forward, and forward + backward (the feature gradient keeps every row; the weight gradient
skips too). The two variants take turns within every repeat (_common.alternated), so their ratio shares the
host's speed of the moment.
"""
from __future__ import annotations

import numpy as np
import torch
from _common import alternated, load_benchmark_sweep

import pc3d.sparse as sp
from pc3d.voxel import grid_sample

VOXEL = 0.1
CHANNELS = 64


def _spikes(n: int, silent: float, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    spikes = rng.integers(1, 5, (n, CHANNELS)).astype(np.float32) * (rng.random((n, CHANNELS)) < 0.3)
    spikes[rng.random(n) < silent] = 0
    return torch.from_numpy(spikes)


def run_snn(timed, quick: bool = False) -> list[dict]:
    del timed  # the two variants take turns within every repeat (_common.alternated)
    points, _ = load_benchmark_sweep()
    coords_np, shape, _, _ = grid_sample(points, VOXEL)
    coords = torch.from_numpy(coords_np)
    repeats = 3 if quick else 7
    torch.manual_seed(0)
    conv = sp.SubMConv3d(CHANNELS, CHANNELS, 3, bias=False)
    grad = torch.randn(len(coords), CHANNELS)
    rows = []
    for silent in (0.5, 0.7, 0.9):
        x = sp.SparseTensor(_spikes(len(coords), silent), coords, shape, 1)
        conv(x)  # builds and caches the map on x

        def forward(skip: bool, x=x):
            conv.skip_zero_rows = skip
            with torch.no_grad():
                return conv(x).feats

        def forward_backward(skip: bool, x=x):
            conv.skip_zero_rows = skip
            feats = x.feats.clone().requires_grad_(True)
            conv(x.replace_feature(feats)).feats.backward(grad)
            conv.weight.grad = None

        same = torch.equal(forward(True).view(torch.int32), forward(False).view(torch.int32))
        tag = f"{100 * silent:.0f} % silent rows, {len(coords):,} voxels"
        for mode, fn in (("forward", forward), ("forward + backward", forward_backward)):
            ours, ref = alternated([lambda fn=fn: fn(True), lambda fn=fn: fn(False)], repeats)
            rows.append({"case": f"SubM {CHANNELS}->{CHANNELS} {mode}, {tag}", "pc3d_s": ours,
                         "ref": "same engine, no skipping", "ref_s": ref, "speedup": ref / ours,
                         "same_outputs": same})
    return rows
