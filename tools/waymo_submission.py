"""Waymo leaderboard submission files from pc3d's outputs, without TensorFlow or a C++ build
(pc3d.eval.waymo_submission: create_submission's rules for detection and tracking; the segmentation tutorial's
SemanticSegmentationSubmission). Tar and gzip what it writes, then upload.

    python tools/waymo_submission.py detection <run>/test_testing/predictions/testing/objects.bin \\
        --account-name me@example.com --method-name pc3d-centerpoint --out submission/detection
    python tools/waymo_submission.py tracking <tracks>/objects.bin --account-name ... --method-name ... --out ...
    python tools/waymo_submission.py segmentation <seg run>/test_validation/predictions/segmentation.bin \\
        --account-name ... --method-name ... --sensor-type LIDAR_ALL --out submission/segmentation.bin
    (--sensor-type: the sensors the model read: LIDAR_ALL for waymo_seg's five lasers, LIDAR_TOP for TOP alone)

Detection / tracking write <out>0 .. <out>{N-1} (--num-shards N, 4 as create_submission), leaving out objects
scoring below 0.03 and boxes with a NaN field, as it does.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from pc3d.eval.waymo_submission import SubmissionInfo, write_box_submission, write_segmentation_submission

    info = SubmissionInfo(args.account_name, args.method_name, args.authors, args.affiliation, args.description,
                          args.method_link, args.sensor_type, args.past_frames, args.future_frames)
    if args.task == "segmentation":
        counts = write_segmentation_submission(args.inputs[0], args.out, info)
        print(f"{counts.files[0]}: {counts.written} frames (SemanticSegmentationSubmission)")
        return 0
    counts = write_box_submission(args.inputs, args.out, info, args.task, args.object_types, args.num_shards,
                                  args.latency)
    print(f"{len(counts.files)} files {counts.files[0].name} .. {counts.files[-1].name} in {counts.files[0].parent}: "
          f"{counts.written} objects ({counts.low_score} below score 0.03 and {counts.not_finite} with NaN left out)")
    return 0


def main(argv: list[str] | None = None) -> int:
    from pc3d.eval.waymo_submission import OBJECT_TYPES, SENSOR_TYPES

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("task", choices=("detection", "tracking", "segmentation"))
    p.add_argument("inputs", nargs="+", type=Path, help="Objects files (detection, tracking) or one "
                                                         "SegmentationFrameList file (segmentation)")
    p.add_argument("--out", type=Path, required=True, help="output file (segmentation) or shard prefix")
    p.add_argument("--account-name", required=True, help="the e-mail registered at waymo.com/open")
    p.add_argument("--method-name", required=True, help="unique method name, at most 25 characters")
    p.add_argument("--authors", nargs="*", default=[])
    p.add_argument("--affiliation", default="")
    p.add_argument("--description", default="")
    p.add_argument("--method-link", default="")
    p.add_argument("--sensor-type", default="LIDAR_ALL", choices=sorted(SENSOR_TYPES))
    p.add_argument("--past-frames", type=int, default=0, help="past frames the model reads (number_past_frames_"
                                                              "exclude_current)")
    p.add_argument("--future-frames", type=int, default=0)
    p.add_argument("--object-types", nargs="+", default=["vehicle", "pedestrian", "cyclist"],
                   choices=sorted(OBJECT_TYPES))
    p.add_argument("--num-shards", type=int, default=4)
    p.add_argument("--latency", type=float, default=-1.0, help="self-reported latency in seconds (-1: not given)")
    args = p.parse_args(argv)
    if args.task == "segmentation" and len(args.inputs) != 1:
        p.error("segmentation takes one SegmentationFrameList file")
    from pc3d.utils.cli import run_tool

    return run_tool("waymo_submission", run, args)


if __name__ == "__main__":
    sys.exit(main())
