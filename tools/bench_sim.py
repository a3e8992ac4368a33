"""`tools/bench.py sim`: the simulated LiDAR world, frames per second including writing the files.

Workload: KITTI preset (64 x 2,048 rays) over street scenes of several hundred primitives, written
in the KITTI object layout (velodyne, label_2 with camera truncation / occlusion, calib, image_2,
planes); Waymo preset (64 x 2,650) written as v2 parquet. Nothing comparable runs here, so the
reference column is empty.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from pc3d.sim.api import outdoor_frames, sensor_spec, simulate_dataset


def _scene_size(spec) -> tuple[int, int]:
    """(primitives, points) of the benchmark's first frame."""
    _, _, frame = next(outdoor_frames(1, 0, spec, frames_per_scene=1))
    return len(frame.world), len(frame.points)


def run_sim(timed, quick: bool) -> list[dict]:
    frames = 5 if quick else 20
    repeats = 1 if quick else 3
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, label in (("kitti", "KITTI HDL-64E frame, simulate + write"),
                           ("waymo", "Waymo TOP frame, simulate + write v2 parquet")):
            spec = sensor_spec("kitti" if fmt == "kitti" else "waymo")
            out = Path(tmp) / fmt
            seconds = timed(lambda fmt=fmt, out=out: simulate_dataset(fmt, out, frames=frames, seed=0),
                            repeats=repeats, warmup=1) / frames
            primitives, points = _scene_size(spec)
            rows.append({"case": label, "pc3d_s": seconds, "ref": "—", "fps": round(1.0 / seconds, 1),
                         "primitives": primitives, "rays": spec.beams * spec.columns, "points": points})
        out = Path(tmp) / "scannet"
        seconds = timed(lambda: simulate_dataset("scannet", out, frames=2, seed=0), repeats=repeats, warmup=1) / 2
        rows.append({"case": "ScanNet-like room mesh + ply/json files", "pc3d_s": seconds, "ref": "—",
                     "fps": round(1.0 / seconds, 1)})
    return rows


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench import timed

    print(np.asarray(run_sim(timed, quick=True)))
