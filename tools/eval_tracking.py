"""Score 3D tracks in the Waymo v2 layout against a dataset's boxes: MOTA, MOTP, misses, mismatches and false
positives per class at LEVEL_1 and LEVEL_2, as the Waymo Open Dataset's tracking metrics compute them
(pc3d.eval.waymo_tracking; 3D IoU matching, the score cutoff with the best MOTA).

    python tools/infer.py <run> data/sim_waymo/validation --track --out outputs/track
    python tools/eval_tracking.py outputs/track/waymo/validation/lidar_box data/sim_waymo --split validation

PREDICTIONS: a folder of <segment>.parquet files in the v2 lidar_box layout with a score column, whose
key.laser_object_id is the track id (tools/infer.py --track writes them). ROOT: the Waymo v2 dataset whose
lidar_box files hold the ground truth with its object ids. Every segment of the split needs its prediction file
(a missing one is named; --allow-missing scores only the segments that have one); a frame without prediction
rows has no detections. --range x0 y0 z0 x1 y1 z1: score only boxes whose centres lie inside the x / y range
(a CPU recipe's crop, as its detection table); default: every box, as the official evaluation. --frame-step N
scores every Nth frame of each segment only (the frames tools/track.py --frame-step N tracked); a prediction on a
frame in between is an error, not dropped.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from pc3d.data import WaymoDataset
    from pc3d.data.waymo_parquet import OBJECT_ID, read_box_predictions
    from pc3d.errors import ConfigError, DataFormatError
    from pc3d.eval.hooks.waymo import inside_xy_range
    from pc3d.eval.waymo_tracking import tracking_table, waymo_tracking_eval

    if args.frame_step < 1:
        raise ConfigError(f"--frame-step must be >= 1, got {args.frame_step}")
    data = WaymoDataset(args.root, split=args.split)
    segments: dict[str, list[int]] = {}
    for segment, timestamp, _ in data.frames:
        segments.setdefault(segment, []).append(timestamp)
    gts, dts, missing, empty = [], [], [], 0
    for segment, stamps in segments.items():
        skipped, stamps = set(stamps) - set(stamps[::args.frame_step]), stamps[::args.frame_step]
        path = Path(args.predictions) / f"{segment}.parquet"
        if not path.is_file():
            missing.append(path)
            continue
        preds = read_box_predictions(path)
        extra = sorted(set(preds) - set(stamps))
        if extra:
            raise DataFormatError(path, f"timestamp {extra[0]} is not a frame of segment {segment}" +
                                  (f" scored with --frame-step {args.frame_step}" if extra[0] in skipped else ""))
        empty += len(set(stamps) - set(preds))
        seg_gt, seg_dt = [], []
        for t in stamps:
            boxes = data.read_boxes(segment, t)
            if "id" not in boxes:
                raise DataFormatError(data.component("lidar_box", segment), f"no {OBJECT_ID} column: no object "
                                                                              "ids to score tracks against")
            keep = inside_xy_range(boxes["box"], args.range)
            seg_gt.append({"boxes": boxes["box"][keep], "types": np.char.lower(boxes["name"][keep]),
                           "num_points": boxes["num_points"][keep], "ids": boxes["id"][keep],
                           "difficulty": boxes.get("tracking_difficulty", boxes["difficulty"])[keep]})
            pred = preds.get(t, {"boxes": np.zeros((0, 7)), "types": np.zeros(0, str), "scores": np.zeros(0),
                                 "ids": np.zeros(0, str)})
            keep = inside_xy_range(pred["boxes"], args.range)
            seg_dt.append({k: v[keep] for k, v in pred.items()} | {"types": np.char.lower(pred["types"][keep])})
        gts.append(seg_gt)
        dts.append(seg_dt)
    if missing and (not args.allow_missing or not gts):
        raise DataFormatError(missing[0], f"missing ({len(missing)} of {len(segments)} segments have no prediction "
                                          "file; --allow-missing scores the others)")
    classes = tuple(args.classes)
    result = waymo_tracking_eval(gts, dts, tuple(c.lower() for c in classes))
    where = ("all boxes" if args.range is None else
             f"boxes with centres inside x, y range {args.range[0]:g}..{args.range[3]:g}, "
             f"{args.range[1]:g}..{args.range[4]:g} m")
    frames = sum(len(s) for s in gts)
    notes = "".join([f", one frame in {args.frame_step}" if args.frame_step > 1 else "",
                     f", {empty} without prediction rows" if empty else "",
                     f"; {len(missing)} segment(s) without predictions" if missing else ""])
    print(tracking_table(result, classes, f"Waymo tracking (%) over {len(gts)} segment(s), {frames} frames{notes}, "
                                          f"{where}"))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("predictions", help="folder of <segment>.parquet track files (v2 lidar_box layout + score)")
    p.add_argument("root", help="the Waymo v2 dataset root holding the ground truth")
    p.add_argument("--split", default="validation", help="the split the predictions cover (default: validation)")
    p.add_argument("--classes", nargs="+", default=["Vehicle", "Pedestrian", "Cyclist"])
    p.add_argument("--range", type=float, nargs=6, metavar=("X0", "Y0", "Z0", "X1", "Y1", "Z1"),
                   help="score only boxes with centres inside this x / y range (default: all)")
    p.add_argument("--frame-step", type=int, default=1, metavar="N",
                   help="score every Nth frame of each segment only (default 1: every frame)")
    p.add_argument("--allow-missing", action="store_true", help="score only the segments that have a prediction")
    args = p.parse_args(argv)
    from pc3d.utils.cli import run_tool

    return run_tool("eval_tracking", run, args)


if __name__ == "__main__":
    sys.exit(main())
