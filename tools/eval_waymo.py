"""Score Waymo Objects files as Waymo's compute_detection_metrics_main (AP, APH) or, with --tracking,
compute_tracking_metrics_main (MOTA, MOTP, miss, mismatch, FP) do, without TensorFlow or a C++ build: per object
type and per range band, at LEVEL_1 and LEVEL_2, printed in the official tools' lines (pc3d.eval.waymo_breakdown).

    python tools/create_data.py waymo data/sim_waymo   # also writes data/sim_waymo/waymo_gt_objects_<split>.bin
    python tools/test.py run_dir=<run>   # also writes <run>/test_validation/predictions/validation/objects.bin
    python tools/eval_waymo.py <run>/test_validation/predictions/validation/objects.bin \\
        data/sim_waymo/waymo_gt_objects_validation.bin
    python tools/eval_waymo.py <tracks>/objects.bin data/sim_waymo/waymo_gt_objects_validation.bin --tracking

PREDICTIONS, GROUND_TRUTH: serialised ``waymo.open_dataset.Objects`` files (pc3d's writers, Waymo's gt.bin, or any
other framework's submission file). The same two files give the same lines as the official tools (README:
Waymo Objects files, for where and why they differ on Waymo's own example files). Predictions flagged
``overlap_with_nlz`` are counted as any other (the official tools excuse the unmatched ones): their number is
printed when there are any. --json FILE also writes the figures.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from pc3d.eval.waymo_breakdown import detection_breakdowns, format_detection, format_tracking, tracking_breakdowns
    from pc3d.eval.waymo_objects import read_objects

    predictions, ground_truth = read_objects(args.predictions), read_objects(args.ground_truth)
    frames = len(set(predictions) | set(ground_truth))
    boxes = [sum(len(f["types"]) for f in side.values()) for side in (predictions, ground_truth)]
    print(f"{frames} frames ({len(set(ground_truth) - set(predictions))} without predictions); {boxes[0]} predicted "
          f"and {boxes[1]} ground-truth objects")
    in_zones = sum(int(np.sum(f["overlap_with_nlz"])) for f in predictions.values())
    if in_zones:
        print(f"{in_zones} predictions are flagged overlap_with_nlz: counted here, excused by the official tools "
              "when unmatched")
    if args.tracking:
        lines = tracking_breakdowns(predictions, ground_truth)
        print(format_tracking(lines))
    else:
        lines = detection_breakdowns(predictions, ground_truth)
        print(format_detection(lines))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({name: result for name, result in lines}, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("predictions", type=Path, help="the predictions' Objects file (.bin)")
    p.add_argument("ground_truth", type=Path, help="the ground truth's Objects file (.bin)")
    p.add_argument("--tracking", action="store_true", help="tracking metrics (the objects' ids are track ids)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    from pc3d.utils.cli import run_tool

    return run_tool("eval_waymo", run, args)


if __name__ == "__main__":
    sys.exit(main())
