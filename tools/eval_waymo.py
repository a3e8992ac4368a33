"""Score Waymo's evaluation files as Waymo's own command-line tools do, without TensorFlow or a C++ build: Objects
files as compute_detection_metrics_main (AP, APH) or, with --tracking, compute_tracking_metrics_main (MOTA, MOTP,
miss, mismatch, FP), per object type and range band at LEVEL_1 and LEVEL_2 (pc3d.eval.waymo_breakdown);
SegmentationFrameList files, with --segmentation, as compute_segmentation_metrics_main (per-class IoU and mIoU,
pc3d.eval.waymo_segmentation). The lines are printed as those tools print them.

    python tools/create_data.py waymo data/sim_waymo   # also writes waymo_gt_{objects,segmentation}_<split>.bin
    python tools/test.py run_dir=<run>   # also writes <run>/test_validation/predictions/validation/objects.bin
    python tools/eval_waymo.py <run>/test_validation/predictions/validation/objects.bin \\
        data/sim_waymo/waymo_gt_objects_validation.bin
    python tools/eval_waymo.py <tracks>/objects.bin data/sim_waymo/waymo_gt_objects_validation.bin --tracking
    python tools/eval_waymo.py <seg run>/test_validation/predictions/segmentation.bin \\
        data/sim_waymo/waymo_gt_segmentation_validation.bin --segmentation

PREDICTIONS, GROUND_TRUTH: serialised ``waymo.open_dataset.Objects`` (or, with --segmentation,
``SegmentationFrameList``) files: pc3d's writers, Waymo's gt.bin, or any other framework's submission file. The same
two files give the same lines as the official tools (README: Waymo Objects files, for where and why they differ on
Waymo's own example files). As in the official tools, an unmatched prediction flagged ``overlap_with_nlz`` is not a
false positive; the number of flagged predictions is printed when there are any. --range X0 Y0 Z0 X1 Y1 Z1 keeps the
boxes whose centres lie inside the x / y range in both files (what tools/test.py scores for a cropped CPU recipe).
--json FILE also writes the figures.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    figures = segmentation(args) if args.segmentation else boxes(args)
    if args.json is not None:
        import json

        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


def boxes(args: argparse.Namespace) -> dict:
    import numpy as np

    from pc3d.eval.waymo_breakdown import detection_breakdowns, format_detection, format_tracking, tracking_breakdowns
    from pc3d.eval.waymo_objects import read_objects

    predictions, ground_truth = read_objects(args.predictions), read_objects(args.ground_truth)
    if args.range is not None:  # a CPU recipe's crop, as its Waymo hook scores it
        from pc3d.eval.hooks.waymo import inside_xy_range

        predictions, ground_truth = ({key: {k: v[inside] for k, v in frame.items()}
                                      for key, frame in side.items()
                                      for inside in [inside_xy_range(frame["boxes"], args.range)]}
                                     for side in (predictions, ground_truth))
    frames = len(set(predictions) | set(ground_truth))
    counts = [sum(len(f["types"]) for f in side.values()) for side in (predictions, ground_truth)]
    print(f"{frames} frames ({len(set(ground_truth) - set(predictions))} without predictions); {counts[0]} predicted "
          f"and {counts[1]} ground-truth objects")
    in_zones = sum(int(np.sum(f["overlap_with_nlz"])) for f in predictions.values())
    if in_zones:
        print(f"{in_zones} predictions are flagged overlap_with_nlz: when unmatched they are not false positives")
    if args.tracking:
        lines = tracking_breakdowns(predictions, ground_truth)
        print(format_tracking(lines))
    else:
        lines = detection_breakdowns(predictions, ground_truth)
        print(format_detection(lines))
    return dict(lines)


def segmentation(args: argparse.Namespace) -> dict:
    from pc3d.data.waymo_seg import WAYMO_SEG_CLASSES
    from pc3d.eval.waymo_segmentation import read_segmentation_frames, score_segmentation_files

    predictions, ground_truth = read_segmentation_frames(args.predictions), read_segmentation_frames(args.ground_truth)
    print(f"{len(predictions)} frames found in prediction.\n{len(ground_truth)} frames found in groundtruth.")
    result = score_segmentation_files(predictions, ground_truth)
    if result["missing"]:
        print(f"{result['missing']} of the {result['frames']} labelled frames have no prediction: all undefined")
    iou = {f"TYPE_{name.upper()}": float(v) for name, v in zip(WAYMO_SEG_CLASSES[1:], result["iou"], strict=True)}
    print("\n".join(f"{name}:{v:.6g}" for name, v in iou.items()) + f"\nmiou={result['mIoU']:.6g}")
    return {"iou": iou, "miou": result["mIoU"], "frames": result["frames"], "missing": result["missing"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("predictions", type=Path, help="the predictions' Objects (or SegmentationFrameList) file")
    p.add_argument("ground_truth", type=Path, help="the ground truth's Objects (or SegmentationFrameList) file")
    task = p.add_mutually_exclusive_group()
    task.add_argument("--tracking", action="store_true", help="tracking metrics (the objects' ids are track ids)")
    task.add_argument("--segmentation", action="store_true", help="3D semantic segmentation: SegmentationFrameList "
                                                                  "files, per-class IoU and mIoU")
    p.add_argument("--range", type=float, nargs=6, metavar=("X0", "Y0", "Z0", "X1", "Y1", "Z1"),
                   help="boxes: score only those with centres inside this x / y range, in both files (a CPU "
                        "recipe's crop, as tools/test.py's table); default: all, as the official tools")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.segmentation and args.range is not None:
        p.error("--range crops boxes: it does not apply to --segmentation")
    from pc3d.utils.cli import run_tool

    return run_tool("eval_waymo", run, args)


if __name__ == "__main__":
    sys.exit(main())
