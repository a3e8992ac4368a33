"""`make demo`: the main job on pc3d's built-in default data.

Today: the environment report, then a sparse-convolution smoke run (a SubM stack over a real or
synthetic LiDAR sweep, native backend, forward + backward). The detection issue turns this into
simulate -> train -> evaluate -> infer -> render.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_benchmark_sweep  # noqa: E402

from pc3d.info import environment_report  # noqa: E402


def sparse_smoke(voxel_size: float = 0.1) -> None:
    from pc3d.sparse import SparseSequential, SparseTensor, SubMConv3d
    from pc3d.voxel import grid_sample

    points, source = load_benchmark_sweep()
    coords, spatial_shape, _, _ = grid_sample(points, voxel_size)
    feats = torch.ones(len(coords), 4)
    x = SparseTensor(feats, torch.from_numpy(coords), spatial_shape, batch_size=1)
    net = SparseSequential(
        SubMConv3d(4, 16, 3, bias=False, indice_key="subm1"),
        torch.nn.BatchNorm1d(16),
        torch.nn.ReLU(),
        SubMConv3d(16, 16, 3, bias=False, indice_key="subm1"),
    )
    start = time.perf_counter()
    y = net(x)
    y.feats.sum().backward()
    elapsed = time.perf_counter() - start
    print(f"sparse smoke: {len(points):,} points from {source} -> {len(coords):,} voxels at "
          f"{voxel_size} m; SubM stack forward + backward {elapsed * 1e3:.0f} ms "
          f"(first call includes numba compilation); output {tuple(y.feats.shape)}")


def main() -> int:
    print(environment_report())
    print()
    sparse_smoke()
    return 0


if __name__ == "__main__":
    sys.exit(main())
