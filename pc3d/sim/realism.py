"""Realism report: simulated KITTI-preset frames against a real KITTI velodyne frame.

Both clouds are cropped to the camera field of view (KITTI calibration) before the statistics.
The real sample carries no labels, so points per object are reported for the simulation only.
"""
from __future__ import annotations

import numpy as np

from .ground_truth import in_camera_fov, kitti_calib
from .sensor import velodyne_file_order

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
DISTANCES = (10.0, 20.0, 40.0)


def ground_height(points: np.ndarray) -> tuple[float, float]:
    """(median z of the ground band 4-20 m ahead, height at the sensor of a plane fitted to that band).

    The ground band is the points within 0.15 m of the z-histogram mode in 4 < x < 40, |y| < 10.
    """
    region = (np.abs(points[:, 1]) < 10) & (points[:, 0] > 4) & (points[:, 0] < 40)
    counts, edges = np.histogram(points[region, 2], bins=np.arange(-3.0, 0.0, 0.02))
    mode = edges[counts.argmax()] + 0.01
    band = points[region & (np.abs(points[:, 2] - mode) < 0.15)]
    near = band[band[:, 0] < 20]
    design = np.c_[band[:, 0], band[:, 1], np.ones(len(band))]
    z = band[:, 2].astype(np.float64)
    for _ in range(3):
        coef, *_ = np.linalg.lstsq(design, z, rcond=None)
        keep = np.abs(z - design @ coef) < 0.08
        design, z = design[keep], z[keep]
    return float(np.median(near[:, 2])), float(coef[2])


def rising_share(points: np.ndarray) -> float:
    """The share of steps between consecutive points within a ring (under 0.5 rad) whose azimuth rises: 1 for
    KITTI's file order (each ring counter-clockwise), 0 for a clockwise one."""
    azimuth = np.arctan2(points[:, 1], points[:, 0])
    step = (np.diff(azimuth) + np.pi) % (2 * np.pi) - np.pi
    step = step[np.abs(step) < 0.5]
    return float((step > 0).mean()) if len(step) else float("nan")


def cloud_stats(points: np.ndarray) -> dict:
    """Statistics of a FOV-cropped cloud float32 [N, 4] in file order."""
    rng = np.linalg.norm(points[:, :3], axis=1)
    median, plane = ground_height(points)
    return {"points": len(points), "range": np.quantile(rng, QUANTILES), "rising": rising_share(points),
            "intensity": np.quantile(points[:, 3], QUANTILES),
            "zero_intensity": float((points[:, 3] == 0).mean()), "ground": median, "ground_plane": plane}


def points_per_object(frames, calib, kind: str = "car", tolerance: float = 2.5) -> list[float]:
    """Median points in the boxes of `kind` objects in the camera view at about 10 / 20 / 40 m."""
    found: dict[float, list[int]] = {d: [] for d in DISTANCES}
    for frame in frames:
        for box, k, n in zip(frame.boxes, frame.kinds, frame.num_points, strict=True):
            if k != kind or not in_camera_fov(box[None, :3], calib)[0]:
                continue
            dist = float(np.linalg.norm(box[:2]))
            for d in DISTANCES:
                if abs(dist - d) < tolerance * d / 10:
                    found[d].append(int(n))
    return [float(np.median(v)) if v else float("nan") for v in found.values()]


def compare(real: np.ndarray, frames: int = 10, seed: int = 0) -> str:
    """The markdown realism table for a real KITTI frame float32 [N, 4] against `frames` simulated ones."""
    from .frames import outdoor_frames, sensor_spec

    calib = kitti_calib()
    real = real[in_camera_fov(real, calib)]
    sims = [f for _, _, f in outdoor_frames(frames, seed, sensor_spec("kitti"), frames_per_scene=1)]
    in_file = [f.points[velodyne_file_order(f.sweep)] for f in sims]
    stats = [cloud_stats(p[in_camera_fov(p, calib)]) for p in in_file]
    r = cloud_stats(real)

    def med(key):
        return np.median(np.stack([np.atleast_1d(s[key]) for s in stats]), axis=0)

    per_object = points_per_object(sims, calib)
    q = "/".join(f"{int(v * 100)}" for v in QUANTILES)
    rows = [
        ("points in camera FOV", f"{r['points']:,}", f"{int(med('points')[0]):,}"),
        (f"range quantiles {q} % (m)", _fmt(r["range"], 1), _fmt(med("range"), 1)),
        ("ground height, median z 4-20 m (m)", f"{r['ground']:.2f}", f"{med('ground')[0]:.2f}"),
        ("ground height, plane fit at sensor (m)", f"{r['ground_plane']:.2f}", f"{med('ground_plane')[0]:.2f}"),
        (f"intensity quantiles {q} %", _fmt(r["intensity"], 2), _fmt(med("intensity"), 2)),
        ("share of zero intensity", f"{r['zero_intensity']:.2f}", f"{med('zero_intensity')[0]:.2f}"),
        ("scan order: share of in-ring steps with rising azimuth", f"{r['rising']:.3f}", f"{med('rising')[0]:.3f}"),
    ]
    rows += [(f"points per car at {int(d)} m", "— (no labels)", f"{v:.0f}") for d, v in zip(DISTANCES, per_object,
                                                                                          strict=True)]
    lines = [f"| statistic | real KITTI frame | simulated (median of {frames} frames) |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def _fmt(values, digits: int) -> str:
    return " / ".join(f"{v:.{digits}f}" for v in values)
