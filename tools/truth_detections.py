"""Write a Waymo v2 dataset's ground-truth boxes as detection files, with noise if asked: tracker settings scored
apart from any detector (pc3d.track.truth).

    python tools/truth_detections.py data/sim_waymo_seed1 --split training --out outputs/truth \\
        --centre 0.1 --velocity 0.5 --drop 0.1
    python tools/track.py outputs/truth data/sim_waymo_seed1 --split training --out outputs/truth_tracks
    python tools/eval_tracking.py outputs/truth_tracks data/sim_waymo_seed1 --split training

Every frame's boxes of the tracked classes that hold LiDAR points, each dropped with probability --drop, centres
moved by Gaussian noise of --centre metres along x and y, velocities by --velocity m/s along each axis, a random
score in [0.5, 1). Without noise, what tools/track.py's tracks lose below MOTA 100 is the tracker's own doing
(at 2 Hz with --motion own, neighbours swapped: README, Tracking). The files are what tools/test.py writes: one
<segment>.parquet per segment in the v2 lidar_box layout with a score and speed columns.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from pc3d.data import WaymoDataset
    from pc3d.data.waymo_parquet import WAYMO_CLASSES, write_box_predictions
    from pc3d.track.truth import truth_detections

    data = WaymoDataset(args.root, split=args.split)
    rng = np.random.default_rng(args.seed)
    frames: dict[str, list] = {}
    for segment, timestamp, _ in data.frames:
        boxes = truth_detections(data.read_boxes(segment, timestamp), WAYMO_CLASSES, rng, args.centre,
                                 args.velocity, args.drop)
        frames.setdefault(segment, []).append((timestamp, boxes))
    out = Path(args.out)
    for segment, detections in frames.items():
        write_box_predictions(out / f"{segment}.parquet", segment, detections, WAYMO_CLASSES,
                              data.vehicle_poses(segment))
    count = sum(len(d["scores"]) for f in frames.values() for _, d in f)
    print(f"truth detections: {out} ({len(frames)} segment(s), {sum(map(len, frames.values()))} frames, {count} "
          f"boxes; centre noise {args.centre:g} m, velocity noise {args.velocity:g} m/s, drop {args.drop:g})")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", help="the Waymo v2 dataset root (its lidar_box ground truth)")
    p.add_argument("--split", default="validation", help="the split to write (default: validation)")
    p.add_argument("--out", required=True, help="folder for the <segment>.parquet detection files")
    p.add_argument("--centre", type=float, default=0.0, metavar="M",
                   help="standard deviation of the centre noise along x and y, metres (default 0)")
    p.add_argument("--velocity", type=float, default=0.0, metavar="M/S",
                   help="standard deviation of the velocity noise along x and y, m/s (default 0)")
    p.add_argument("--drop", type=float, default=0.0, metavar="P", help="probability of dropping a box (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    args = p.parse_args(argv)
    from pc3d.utils.cli import run_tool

    return run_tool("truth_detections", run, args)


if __name__ == "__main__":
    sys.exit(main())
