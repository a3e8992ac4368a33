"""`tools/bench.py geometry`: pc3d.geometry kernels against numpy, shapely and torch references.

Workload: KITTI-like boxes (cars, pedestrians, cyclists) spread over 70 m x 80 m, uniform points
in the same area, and the 360-degree sweep ../shared/samples/scan360/benchmark-pc.npz for knn
(random points when it is absent). Slow references run on a subset and are scaled; the case
name says so. pc3d_1thread_s is the same call on one thread (see _one_thread). torch.cdist's
float32 matrix-product distances can swap near-ties, so same_neighbour_sets may sit just below 1.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pc3d.geometry import boxes_to_corners, iou_3d, knn, nms_rotated, points_in_boxes

SWEEP = Path(__file__).resolve().parents[1].parent / "shared" / "samples" / "scan360" / "benchmark-pc.npz"


def kitti_like_boxes(m: int, rng: np.random.Generator) -> np.ndarray:
    """float32 [m, 7]: 70 % cars, 20 % pedestrians, 10 % cyclists over x in [0, 70], y in [-40, 40]."""
    sizes = np.array([[3.9, 1.6, 1.56], [0.8, 0.6, 1.73], [1.76, 0.6, 1.73]])
    kind = rng.choice(3, m, p=[0.7, 0.2, 0.1])
    dims = sizes[kind] * rng.uniform(0.85, 1.15, (m, 3))
    centre = np.c_[rng.uniform(0, 70, m), rng.uniform(-40, 40, m), -1.6 + dims[:, 2] / 2 + rng.normal(0, 0.1, m)]
    return np.c_[centre, dims, rng.uniform(-np.pi, np.pi, m)].astype(np.float32)


def _numpy_points_in_boxes(points: np.ndarray, boxes: np.ndarray, chunk: int = 10) -> np.ndarray:
    """First box containing each point, vectorised over 10-box chunks ([N, 10] at a time)."""
    out = np.full(len(points), -1, np.int32)
    xyz = points[:, :3].astype(np.float64)
    for start in range(len(boxes) - chunk, -chunk, -chunk):  # later chunks first, so lower ids win
        b = boxes[max(start, 0): start + chunk].astype(np.float64)
        d = xyz[:, None, :2] - b[None, :, :2]
        c, s = np.cos(b[:, 6]), np.sin(b[:, 6])
        lx = d[..., 0] * c + d[..., 1] * s
        ly = -d[..., 0] * s + d[..., 1] * c
        inside = (np.abs(lx) <= b[:, 3] / 2) & (np.abs(ly) <= b[:, 4] / 2)
        inside &= np.abs(xyz[:, None, 2] - b[:, 2]) <= b[:, 5] / 2
        hit = inside.any(1)
        out[hit] = max(start, 0) + inside[hit].argmax(1)
    return out


def _shapely_iou3d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from shapely.geometry import Polygon

    pa = [Polygon(c[:4, :2]) for c in boxes_to_corners(a.astype(np.float64))]
    pb = [Polygon(c[:4, :2]) for c in boxes_to_corners(b.astype(np.float64))]
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(pa):
        for j, q in enumerate(pb):
            inter = p.intersection(q).area
            zo = max(0.0, min(a[i, 2] + a[i, 5] / 2, b[j, 2] + b[j, 5] / 2) - max(a[i, 2] - a[i, 5] / 2,
                                                                                  b[j, 2] - b[j, 5] / 2))
            vol = inter * zo
            union = a[i, 3] * a[i, 4] * a[i, 5] + b[j, 3] * b[j, 4] * b[j, 5] - vol
            out[i, j] = vol / union if union > 0 else 0.0
    return out


def _torch_knn(query: np.ndarray, ref: np.ndarray, k: int, chunk: int = 512) -> np.ndarray:
    q, r = torch.from_numpy(query), torch.from_numpy(ref)
    out = []
    for start in range(0, len(q), chunk):
        d = torch.cdist(q[start: start + chunk], r)
        out.append(d.topk(k, dim=1, largest=False).indices)
    return torch.cat(out).numpy()


def _one_thread(timed, fn, repeats: int) -> float:
    """fn's time on one thread: on a shared machine a busy second core stalls every parallel
    region, so this row is the contention-free lower bound of the speedup."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return timed(fn, repeats=repeats)
    finally:
        torch.set_num_threads(n)


def _row(case: str, pc3d_s: float, ref: str, ref_s: float | None, **extra) -> dict:
    row = {"case": case, "pc3d_s": pc3d_s, "ref": ref, "ref_s": ref_s,
           "speedup": (ref_s / pc3d_s) if ref_s else None}
    row.update(extra)
    return row


def run_geometry(timed, quick: bool) -> list[dict]:
    rng = np.random.default_rng(0)
    repeats = 3 if quick else 5
    rows = []

    # points in boxes: 200k points x 100 boxes
    boxes = kitti_like_boxes(100, rng)
    points = np.c_[rng.uniform([0, -40, -2.5], [70, 40, 1.0], (200_000, 3)), rng.random(200_000)].astype(np.float32)
    ours = points_in_boxes(points, boxes)
    t = timed(lambda: points_in_boxes(points, boxes), repeats=repeats)
    ref = _numpy_points_in_boxes(points, boxes)
    t_ref = timed(lambda: _numpy_points_in_boxes(points, boxes), repeats=1 if quick else 3)
    rows.append(_row("points_in_boxes 200k pts x 100 boxes", t, "numpy, 10-box chunks", t_ref,
                     pc3d_1thread_s=_one_thread(timed, lambda: points_in_boxes(points, boxes), repeats),
                     mismatches=int((ours != ref).sum()), points_inside=int((ours >= 0).sum())))

    # rotated 3D IoU 500 x 500, shapely timed on 100 x 100 and scaled x25; dense enough to overlap
    a = kitti_like_boxes(500, rng)
    jitter = np.c_[rng.normal(0, 0.8, (500, 3)), rng.normal(0, 0.2, (500, 3)), rng.normal(0, 0.5, 500)]
    b = a + jitter.astype(np.float32)
    b[:, 3:6] = np.abs(b[:, 3:6])
    sub = slice(0, 100)
    t = timed(lambda: iou_3d(a, b), repeats=repeats)
    ref_sub = _shapely_iou3d(a[sub], b[sub])
    t_ref = 25 * timed(lambda: _shapely_iou3d(a[sub], b[sub]), repeats=1, warmup=0)
    ours = iou_3d(a, b)
    rows.append(_row("iou_3d 500 x 500 rotated (shapely on 100 x 100, x25)", t, "shapely loop", t_ref,
                     pc3d_1thread_s=_one_thread(timed, lambda: iou_3d(a, b), repeats),
                     max_abs_diff=float(np.abs(ours[sub, sub] - ref_sub).max()), nonzero_pairs=int((ours > 0).sum())))

    # rotated NMS on 5,000 boxes: clusters of near-duplicate proposals around 500 objects
    centres = kitti_like_boxes(500, rng)
    props = np.repeat(centres, 10, 0) + np.c_[rng.normal(0, 0.3, (5000, 2)), np.zeros((5000, 1)),
                                              rng.normal(0, 0.1, (5000, 3)), rng.normal(0, 0.1, 5000)]
    props = props.astype(np.float32)
    scores = rng.random(5000).astype(np.float32)
    t = timed(lambda: nms_rotated(props, scores, 0.5), repeats=repeats)
    rows.append(_row("nms_rotated 5,000 boxes (IoU 0.5)", t, "—", None, kept=len(nms_rotated(props, scores, 0.5)),
                     pc3d_1thread_s=_one_thread(timed, lambda: nms_rotated(props, scores, 0.5), repeats)))

    # knn 100k x 100k, k = 16; torch cdist + topk timed on a query subset and scaled
    if SWEEP.exists():
        cloud = np.load(SWEEP)["pc"][:, :3].astype(np.float32)
        ref_pts = cloud[rng.choice(len(cloud), 100_000, replace=False)]
    else:
        ref_pts = rng.uniform([-50, -50, -2], [50, 50, 3], (100_000, 3)).astype(np.float32)
    t = timed(lambda: knn(ref_pts, ref_pts, 16), repeats=repeats)
    n_sub = 2_000 if quick else 10_000
    scale = len(ref_pts) / n_sub
    t_ref = scale * timed(lambda: _torch_knn(ref_pts[:n_sub], ref_pts, 16), repeats=1, warmup=0)
    _, idx = knn(ref_pts[:n_sub], ref_pts, 16)
    agree = float((np.sort(idx, 1) == np.sort(_torch_knn(ref_pts[:n_sub], ref_pts, 16), 1)).all(1).mean())
    rows.append(_row(f"knn 100k x 100k k=16 (torch on {n_sub:,} queries, x{scale:g})", t,
                     "torch.cdist + topk, 512-query chunks", t_ref, same_neighbour_sets=agree,
                     pc3d_1thread_s=_one_thread(timed, lambda: knn(ref_pts, ref_pts, 16), 1)))
    return rows
