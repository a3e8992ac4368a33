"""Track the detections of Waymo v2 prediction files: CenterPoint's greedy tracker over each segment, in the world
frame of the segment's vehicle poses (pc3d.track), written back in the same layout with the track id as
``key.laser_object_id`` (what tools/eval_tracking.py scores and a tracking submission carries).

    python tools/test.py run_dir=<run> dataset_root=data/sim_waymo_seed1 split=training   # writes predictions/
    python tools/track.py <run>/test_*/predictions/training/lidar_box data/sim_waymo_seed1 --split training \\
        --out outputs/tracks
    python tools/eval_tracking.py outputs/tracks data/sim_waymo_seed1 --split training

tools/infer.py --track tracks while it detects; this tool tracks files already written (by tools/test.py,
tools/infer.py or another detector), so trying a tracker setting does not rerun the detector. --frame-step N
tracks every Nth frame only (5: Waymo's 10 Hz as nuScenes' 2 Hz key frames, where objects move five times farther
between the frames the tracker sees; the detector still had its sweeps at 10 Hz); score it with the same
--frame-step in tools/eval_tracking.py.
PREDICTIONS: a folder of <segment>.parquet files (v2 lidar_box columns + score; ``speed.x`` / ``speed.y`` when the
detector predicts velocities). ROOT: the Waymo v2 dataset with the segments' vehicle_pose files.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from pc3d.data import WaymoDataset
    from pc3d.data.waymo_parquet import WAYMO_CLASSES, read_box_predictions, write_box_predictions
    from pc3d.errors import ConfigError, DataFormatError
    from pc3d.eval.waymo_objects import prediction_frames, write_objects
    from pc3d.track import GreedyTracker, max_distances, max_speeds, parse_gates, update_in_world

    files = sorted(Path(args.predictions).glob("*.parquet"))
    if not files:
        raise DataFormatError(args.predictions, "no <segment>.parquet prediction files")
    data = WaymoDataset(args.root, split=args.split, labels=False)
    stamps: dict[str, list[int]] = {}
    for segment, timestamp, _ in data.frames:
        stamps.setdefault(segment, []).append(timestamp)
    if args.frame_step < 1:
        raise ConfigError(f"--frame-step must be >= 1, got {args.frame_step}")
    classes = list(WAYMO_CLASSES)
    tracker = GreedyTracker(max_distances(classes, parse_gates(args.track_distance)), args.max_age, args.motion,
                            max_speeds(classes, parse_gates(args.track_max_speed, "--track-max-speed", zero=True)))
    out = Path(args.out)
    used, tracked, poses_by_segment = set(), {}, {}
    for path in files:
        segment = path.stem
        if segment not in stamps:
            raise DataFormatError(path, f"segment {segment} is not in {args.root}'s {args.split} split")
        poses = poses_by_segment[segment] = data.vehicle_poses(segment)
        preds = read_box_predictions(path, poses)  # velocities in the vehicle frame
        tracker.reset()
        frames = []
        for t in stamps[segment][::args.frame_step]:
            p = preds.get(t)
            if p is None:
                p = {"boxes": np.zeros((0, 7)), "types": np.zeros(0, str), "scores": np.zeros(0)}
            unknown = sorted(set(p["types"].tolist()) - set(classes))
            if unknown:
                raise DataFormatError(path, f"frame {t}: box types {unknown} are not tracked ({classes})")
            labels = np.asarray([classes.index(n) + 1 for n in p["types"]], np.int64)
            pose = data.vehicle_pose(segment, t)
            ids, how = update_in_world(tracker, p["boxes"], labels, p["scores"], pose, t * 1e-6)
            used.add(how)
            frames.append((t, {"boxes": p["boxes"], "scores": p["scores"], "labels": labels, "track_ids": ids}))
        write_box_predictions(out / path.name, segment, frames, classes, poses)
        tracked[segment] = frames
    objects = write_objects(out / "objects.bin", prediction_frames(tracked, classes, poses_by_segment))
    how = " and ".join(sorted(used))
    every = "" if args.frame_step == 1 else f", one frame in {args.frame_step}"
    print(f"tracks: {out} ({len(files)} segment(s){every}, {tracker.next_id} tracks; velocities from {how}); all of "
          f"them in {objects} (Waymo's Objects protobuf, for tools/eval_waymo.py --tracking)")
    return 0


def main(argv: list[str] | None = None) -> int:
    from pc3d.track.greedy import MOTIONS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("predictions", help="folder of <segment>.parquet detection files (v2 lidar_box layout + score)")
    p.add_argument("root", help="the Waymo v2 dataset root (vehicle_pose of each segment)")
    p.add_argument("--split", default="validation", help="the split the predictions cover (default: validation)")
    p.add_argument("--out", required=True, help="folder for the tracked <segment>.parquet files")
    p.add_argument("--track-distance", nargs="+", default=[], metavar="CLASS=METRES",
                   help="gate per class (defaults: pc3d.track.DEFAULT_MAX_DISTANCE)")
    p.add_argument("--track-max-speed", nargs="+", default=[], metavar="CLASS=M/S",
                   help="the second stage's reach for a track seen once, per class (defaults: "
                        "pc3d.track.greedy.DEFAULT_MAX_SPEED, e.g. Vehicle 30, Pedestrian 3, Cyclist 10; 0: no "
                        "second stage)")
    p.add_argument("--max-age", type=int, default=3, help="frames a track lives without a detection (default 3)")
    p.add_argument("--frame-step", type=int, default=1, metavar="N",
                   help="track every Nth frame of each segment only (default 1: every frame)")
    p.add_argument("--motion", default="either", choices=MOTIONS,
                   help="how a track predicts where it goes: its detection's velocity, its own displacement, "
                        "hybrid (the detection's until its second one, then its own) or either (default: hybrid "
                        "or its last detection's, whichever is nearer; pc3d.track.greedy); files without "
                        "velocities: its own")
    args = p.parse_args(argv)
    from pc3d.utils.cli import run_tool

    return run_tool("track", run, args)


if __name__ == "__main__":
    sys.exit(main())
