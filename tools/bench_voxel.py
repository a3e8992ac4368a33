"""`tools/bench.py voxel`: pc3d's voxelizers against spconv's PointToVoxel (CPU) and Open3D.

Workload: the 360-degree sweep ../shared/samples/scan360/benchmark-pc.npz (198,130 points, plus a
zero intensity column), range [-75.2, -75.2, -2, 75.2, 75.2, 4], 0.1 m and 0.05 m voxels, torch's
thread count (2 on the reference machine). pc3d and the reference are timed in alternating rounds
in one process and the median round is reported, because these machines are shared.
"""
from __future__ import annotations

import statistics
import warnings

import numpy as np
import torch
from _common import load_benchmark_sweep, spconv_missing

from pc3d.voxel import DynamicVoxelizer, HardVoxelizer, grid_sample

RANGE = (-75.2, -75.2, -2.0, 75.2, 75.2, 4.0)
MAX_POINTS = 5
MAX_VOXELS = 150_000


def _alternating(timed, ours, ref, rounds: int, repeats: int) -> tuple[float, float]:
    """Median over rounds of each side's median time; the sides alternate round by round."""
    a, b = [], []
    for _ in range(rounds):
        a.append(timed(ours, repeats=repeats))
        b.append(timed(ref, repeats=repeats))
    return statistics.median(a), statistics.median(b)


def _row(case, ours_s, ref, ref_s, **extra) -> dict:
    return {"case": case, "pc3d_s": ours_s, "ref": ref, "ref_s": ref_s, "speedup": ref_s / ours_s, **extra}


def _hard(timed, points: np.ndarray, voxel: float, rounds: int, repeats: int) -> dict:
    """Against spconv's PointToVoxel; where spconv does not import, pc3d's time alone (_common.spconv_missing)."""
    case = f"hard voxelization {voxel} m (P={MAX_POINTS}, M={MAX_VOXELS:,})"
    vox = HardVoxelizer(voxel, RANGE, MAX_POINTS, MAX_VOXELS)
    missing = spconv_missing()
    if missing:
        ours_s = statistics.median(timed(lambda: vox(points), repeats=repeats) for _ in range(rounds))
        return {"case": case, "pc3d_s": ours_s, "ref": missing, "voxels": len(vox(points))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from spconv.pytorch.utils import PointToVoxel
    ref = PointToVoxel(vsize_xyz=[voxel] * 3, coors_range_xyz=list(RANGE), num_point_features=points.shape[1],
                       max_num_voxels=MAX_VOXELS, max_num_points_per_voxel=MAX_POINTS)
    pc = torch.from_numpy(points)
    out = vox(points)
    voxels, indices, num = ref(pc)
    same = (np.array_equal(out.coords[:, 1:], indices.numpy()) and np.array_equal(out.num_points, num.numpy())
            and np.array_equal(out.voxels, voxels.numpy()))
    ours_s, ref_s = _alternating(timed, lambda: vox(points), lambda: ref(pc), rounds, repeats)
    return _row(case, ours_s, "spconv PointToVoxel (CPU)", ref_s, voxels=len(out), same_output=same)


def _open3d_down_sample(xyz: np.ndarray, voxel: float):
    import open3d as o3d

    return o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz.astype(np.float64))).voxel_down_sample(voxel)


def open3d_missing() -> str | None:
    """"Open3D unavailable: <error>" where open3d does not import (its rows then keep pc3d's side), else None."""
    try:
        import open3d  # noqa: F401
    except Exception as err:  # noqa: BLE001  (a missing system library raises OSError, an ABI mismatch anything)
        return f"Open3D unavailable: {type(err).__name__}"
    return None


def _dynamic(timed, points: np.ndarray, voxel: float, rounds: int, repeats: int) -> dict:
    vox = DynamicVoxelizer(voxel, RANGE)
    xyz = points[:, :3]
    out = vox(points)
    if missing := open3d_missing():
        return {"case": f"dynamic voxelization + inverse map {voxel} m", "pc3d_s": timed(lambda: vox(points),
                repeats=repeats), "ref": missing, "voxels": len(out)}
    ours_s, ref_s = _alternating(timed, lambda: vox(points), lambda: _open3d_down_sample(xyz, voxel), rounds,
                                 repeats)
    return _row(f"dynamic voxelization + inverse map {voxel} m", ours_s, "Open3D voxel_down_sample", ref_s,
                voxels=len(out), ref_voxels=len(_open3d_down_sample(xyz, voxel).points))


def _grid_sample(timed, points: np.ndarray, voxel: float, rounds: int, repeats: int) -> dict:
    xyz = points[:, :3]
    coords = grid_sample(xyz, voxel)[0]
    if missing := open3d_missing():
        return {"case": f"grid_sample (fitted range) {voxel} m", "pc3d_s": timed(lambda: grid_sample(xyz, voxel),
                repeats=repeats), "ref": missing, "voxels": len(coords)}
    ours_s, ref_s = _alternating(timed, lambda: grid_sample(xyz, voxel), lambda: _open3d_down_sample(xyz, voxel),
                                 rounds, repeats)
    return _row(f"grid_sample (fitted range) {voxel} m", ours_s, "Open3D voxel_down_sample", ref_s,
                voxels=len(coords), ref_voxels=len(_open3d_down_sample(xyz, voxel).points))


def run_voxel(timed, quick: bool = False) -> list[dict]:
    """The voxel suite's rows (see the module docstring)."""
    xyz, _ = load_benchmark_sweep()
    points = np.ascontiguousarray(np.concatenate([xyz, np.zeros((len(xyz), 1), np.float32)], 1))
    rounds, repeats = (2, 3) if quick else (5, 7)
    rows = []
    for voxel in (0.1, 0.05):
        rows.append(_hard(timed, points, voxel, rounds, repeats))
    for voxel in (0.1, 0.05):
        rows.append(_dynamic(timed, points, voxel, rounds, repeats))
    rows.append(_grid_sample(timed, points, 0.1, rounds, repeats))
    return rows
