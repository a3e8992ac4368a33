"""`tools/bench.py attn`: per-frame latency of window-attention 3D backbones (DSVT-pillar, DSVT-voxel,
FlatFormer) against the sparse-conv VoxelBackBone8x, forward and forward + backward, with the share of the
forward pass spent on window partitions.

Workload: one simulated frame of the Waymo top-LiDAR preset, cropped to the papers' range (+-74.88 m,
z -2..4 m) and voxelized as the papers do: 0.32 m pillars (468 x 468) for DSVT-pillar and FlatFormer,
0.32 x 0.32 x 0.1875 m voxels (468 x 468 x 32) for DSVT-voxel; VoxelBackBone8x on CenterPoint's Waymo grid
(0.1 x 0.1 x 0.15 m over +-75.2 m). Each backbone gets seeded random input features of its width on its
sites (the VFE is not timed), seeded weights, BatchNorm in train mode for forward + backward. Widths are the
papers' (DSVT 192, FlatFormer 128), plus FlatFormer at DSVT's width (the papers' speed claim at equal width).
The reference column of every row is VoxelBackBone8x in the same mode, timed in turn with the row's backbone
(_common.alternated), so each ratio shares the host's speed of its minutes.
"""
from __future__ import annotations

import numpy as np
import torch
from _common import alternated

RANGE = [-74.88, -74.88, -2.0, 74.88, 74.88, 4.0]
PILLAR = [0.32, 0.32, 6.0]
VOXEL = [0.32, 0.32, 0.1875]
CONV_RANGE = [-75.2, -75.2, -2.0, 75.2, 75.2, 4.0]
CONV_VOXEL = [0.1, 0.1, 0.15]


def _sites(points: np.ndarray, voxel_size, point_range, max_voxels: int = 150000):
    """Voxel coords (b, z, y, x) and the grid of one frame, as the training pipeline voxelizes it."""
    from pc3d.data.batch import Collate
    from pc3d.voxel import HardVoxelizer

    keep = np.all((points[:, :3] >= point_range[:3]) & (points[:, :3] < point_range[3:]), axis=1)
    batch = Collate(HardVoxelizer(voxel_size, point_range, 5, max_voxels))(
        [{"frame_id": "bench", "points": points[keep], "seed": 0}])
    return batch["voxel_coords"], batch["spatial_shape"]


def _input(coords, shape, channels: int):
    from pc3d.sparse import SparseTensor

    g = torch.Generator().manual_seed(0)
    return SparseTensor(torch.randn(len(coords), channels, generator=g), coords, shape, 1)


def _backbones():
    """(name, builder, grid): seeded modules, the papers' widths."""
    from pc3d.models.backbones3d.dsvt import DSVT
    from pc3d.models.backbones3d.flatformer import FlatFormer

    voxel = dict(channels=(192,) * 4, blocks=(1,) * 4, set_size=(48,) * 4,
                 window_shape=((32, 12, 12), (8, 12, 12), (2, 12, 12), (1, 12, 12)),
                 shifted_window_shape=((32, 24, 24), (8, 24, 24), (2, 24, 24), (1, 24, 24)),
                 shift=((0, 6, 6),) * 4, pool_z=(4, 4, 2), ffn_channels=(384,) * 4)
    return [
        ("DSVT-pillar (192 ch, 4 blocks)", lambda: DSVT(192), "pillar", 192),
        ("DSVT-voxel (192 ch, 4 stages)", lambda: DSVT(192, **voxel), "voxel", 192),
        ("FlatFormer (128 ch, 2 x 4 layers)", lambda: FlatFormer(128), "pillar", 128),
        ("FlatFormer at DSVT's width (192 ch)", lambda: FlatFormer(192, channels=192, ffn_channels=384),
         "pillar", 192),
    ]


def _partition(net, x):
    """A call that computes the window partitions of a forward pass, on the sites each stage sees."""
    from pc3d.models.backbones3d.dsvt import DSVT

    if not isinstance(net, DSVT):
        return lambda: net.partition(x)
    with torch.no_grad():
        _, outs = net.forward_features(x)  # a stage's output has its input's sites
    pairs = list(zip(net.stages, outs.values(), strict=True))
    return lambda: [stage.partition(sites) for stage, sites in pairs]


def run_attn(timed, quick: bool = False) -> list[dict]:
    from pc3d.models.backbones3d.voxel_backbone import VoxelBackBone8x
    from pc3d.sim.api import outdoor_frames, sensor_spec

    repeats = 1 if quick else 3
    _, _, frame = next(outdoor_frames(1, 7, sensor_spec("waymo"), frames_per_scene=1))
    points = frame.points.astype(np.float32)
    grids = {"pillar": _sites(points, PILLAR, RANGE), "voxel": _sites(points, VOXEL, RANGE)}
    conv_coords, conv_shape = _sites(points, CONV_VOXEL, CONV_RANGE)
    torch.manual_seed(0)
    conv = VoxelBackBone8x(5)
    conv_x = _input(conv_coords, conv_shape, 5)

    def fresh(x):  # a new tensor each call: no kernel map kept from the last one (the attention rebuilds its sets)
        return type(x)(x.feats, x.coords, x.spatial_shape, x.batch_size)

    def forward(net, x):
        def run():
            with torch.no_grad():
                net(fresh(x))
        return run

    def backward(net, x):
        def run():
            net.zero_grad(set_to_none=True)
            net(fresh(x)).feats.square().mean().backward()
        return run

    rows = []
    for name, build, grid, channels in _backbones():
        torch.manual_seed(0)
        net = build()
        x = _input(*grids[grid], channels)
        conv.eval()
        net.eval()
        part = timed(_partition(net, x), repeats=repeats)
        ref_fwd, fwd = alternated([forward(conv, conv_x), forward(net, x)], repeats)
        conv.train()
        net.train()
        ref_bwd, fwd_bwd = alternated([backward(conv, conv_x), backward(net, x)], repeats)
        for mode, t, ref in (("forward", fwd, ref_fwd), ("forward + backward", fwd_bwd, ref_bwd)):
            rows.append({"case": f"{name}, {mode}, {len(x):,} sites", "pc3d_s": t,
                         "ref": f"VoxelBackBone8x ({len(conv_x):,} voxels)", "ref_s": ref,
                         "speedup": ref / t, "partition_share": f"{part / fwd:.1%}" if mode == "forward" else ""})
    return rows


if __name__ == "__main__":
    import time

    def _timed(fn, repeats=1, warmup=0):
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    for row in run_attn(_timed, quick=True):
        print(row)
