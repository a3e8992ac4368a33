"""Run a trained model over a LiDAR sequence (or RGB-D scenes), frame by frame, whatever its task.

    python tools/infer.py CKPT SOURCE [--out DIR] [--render] [--max-frames N] [--split val]

CKPT: a checkpoint written by tools/train.py, or its run folder (best.pt, else the newest save); loaded as
tools/test.py loads it (the run's config, EMA weights when present).
SOURCE: a point file (.bin float32 rows, .npy / .npz, .pcd, .ply), a folder of them, a KITTI object root,
a SemanticKITTI sequence folder, a Waymo v2 segment (<root>/<split>/lidar/<segment>.parquet, or the split
folder), a ScanNet scene folder (scans/<scene>). See pc3d.infer.sources.

Outputs (pc3d.infer.outputs, by the model's task): detections as KITTI label_2 text + JSON (+ Waymo v2
parquet for Waymo sources); per-point labels in the dataset's submission format (one per point read);
MOS flags, flows, classes. --render writes <out>/render/<frame>.png. Prints latency p50 / p95 per stage.
The model runs in the precision it trained in (train.precision: a bf16 run under bf16 autocast, as
tools/test.py evaluates it), or the one --precision asks.
A bad frame of a sequence is skipped with one line saying why (--strict: stop there); bad input
otherwise ends with one line naming it and exit status 2. Points with NaN / inf are dropped with one line
per frame giving the count (per-point outputs still cover every row of the file: those rows are ignored).
A cloud must carry the columns the model was trained on (x, y, z and its dataset's features, matched by
name where the format names them); --pad-features fills missing ones with 0 and drops extra ones.

A model of task "flow" estimates the motion of each point to the next frame of the sequence
(pc3d.infer.flow_pairs): every frame is cropped as HPLFlowNet crops KITTI (depth < 35 m, the camera's 90-degree
field of view, ground below z = -1.4 m; --flow-* options) and sampled to 8,192 points (--flow-points 0: all),
and the pair (t - 1, t) writes flow/<frame t - 1>.npy; the last frame of a sequence has no flow.

A model trained on a window of scans (dataset.n_past_scans > 0: 4D MOS, multi-sweep Waymo detection) streams a
SemanticKITTI sequence folder (poses.txt, calib.txt) or a Waymo segment (vehicle_pose) through a ring buffer
(pc3d.infer.scan_window): each new scan is reduced once (a MOS window's voxels; a detector's sweeps are kept
raw) and the past ones are moved into the new current frame by the relative pose, the same window the dataset
built in training; the latency table's "prepare" row is that step. --bayes-filter fuses every
scan's flags over the windows that hold it (4DMOS's binary Bayes filter, pc3d.infer.mos_filter).

--track gives a detector's boxes track ids over a Waymo segment or a SemanticKITTI sequence (pc3d.infer.tracking:
CenterPoint's greedy tracker in the world frame, on the detector's velocities when it predicts them); the ids go
into the JSON ("track_ids") and the Waymo parquet's key.laser_object_id, which tools/eval_tracking.py scores.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pc3d.errors import ConfigError  # noqa: E402
from pc3d.track.greedy import MOTIONS  # noqa: E402


def run(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from pc3d.infer.outputs import OUTPUTS, dataset_class
    from pc3d.infer.predictor import Predictor
    from pc3d.infer.results import write_manifest
    from pc3d.infer.sources import open_source
    from pc3d.infer.stream import Renders, latency_table, stream
    from pc3d.utils.progress import track

    # the run loaded, checked and prepared for as pc3d.Predictor does it: the same model input either way
    predictor = Predictor(args.ckpt, device=args.device, precision=args.precision)
    path, cfg, task, window, device = (predictor.checkpoint, predictor.config, predictor.task, predictor.window,
                                       predictor.device)
    pairs = None
    if task == "flow":
        from pc3d.infer.flow_pairs import FlowPairs

        pairs = FlowPairs(args.flow_points or None, args.flow_max_depth, args.flow_fov,
                          None if args.flow_keep_ground else args.flow_min_z)
    dataset_cfg = OmegaConf.to_container(cfg.dataset, resolve=True)
    source = open_source(args.source, predictor.feature_names, args.split, args.pad_features, loader=dataset_cfg)
    # a model of some lasers' points (Waymo segmentation: its dataset config's, else the class's TOP) is fed those alone
    if hasattr(source, "lasers"):
        source.lasers = dataset_cfg.get("lasers") or getattr(dataset_class(dataset_cfg), "lasers", None)
    if window is not None:
        if not hasattr(source, "with_poses"):
            raise ConfigError(f"{args.source}: a {source.kind} source has no poses; a model trained on a window of "
                              f"{window.n_past_scans} past scans streams a SemanticKITTI sequence folder "
                              "(velodyne/, poses.txt, calib.txt) or a Waymo v2 segment (vehicle_pose/)")
        source.with_poses = True
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    num_classes = int(cfg.model.get("num_classes") or len(dataset_cfg.get("class_names") or ()))
    output = OUTPUTS[task](out, dataset_cfg, source, num_classes)
    write_manifest(out, task, path, dataset_cfg, num_classes, getattr(output, "palette", None))
    if args.bayes_filter:
        if window is None or not window.n_past_scans:
            raise ConfigError("--bayes-filter: only a mos model trained on a window of scans (dataset.n_past_scans "
                              "> 0) has overlapping windows to filter")
        from pc3d.infer.mos_filter import FilteredMosOutput

        predictor.model.return_log_odds = True
        output = FilteredMosOutput(output, window.n_past_scans, args.bayes_prior)
    if args.track:
        output = tracked(output, task, source, dataset_cfg, args)
    renders = (Renders(out, args.render_mode, list(cfg.dataset.point_cloud_range), args.render_threshold)
               if args.render else None)
    if args.tta:
        predictor.augment(args.tta, args.tta_scales)
    model, precision = predictor.model, predictor.precision
    total = min(len(source), args.max_frames) if args.max_frames else len(source)
    print(f"{type(model).__name__} ({task}, {precision}) from {path}; {total} frames of a {source.kind} source: "
          f"{args.source}", flush=True)
    if source.note:
        print(source.note, flush=True)

    def progress(it):
        return track(it, total=total, desc="infer", unit="frame")

    records, wall, skipped, dropped = stream(model, source, pairs or predictor.prepare, predictor.collate, output,
                                             device, renders, args.max_frames, progress, args.strict, precision)
    print(output.close(), flush=True)
    if skipped:
        print(f"{len(skipped)} bad frame(s) skipped (listed above); --strict stops at the first", flush=True)
    if dropped:
        print(f"{sum(dropped.values())} points with NaN / inf dropped in {len(dropped)} frame(s) (listed above)",
              flush=True)
    print(latency_table(records, wall), flush=True)
    if renders is not None:
        print(renders.report(), flush=True)
    return 0


def tracked(output, task: str, source, dataset_cfg: dict, args: argparse.Namespace):
    """--track: the detection writer wrapped in a tracker (pc3d.infer.tracking), on a source with poses."""
    from pc3d.infer.outputs import box_class_names
    from pc3d.infer.tracking import TrackedOutput
    from pc3d.track import GreedyTracker, max_distances, max_speeds, parse_gates

    if task != "detection":
        raise ConfigError(f"--track: tracks boxes; a {task} model gives none")
    if not hasattr(source, "with_poses"):
        raise ConfigError(f"{args.source}: a {source.kind} source has no poses; --track needs a sequence's poses "
                          "(a Waymo v2 segment, or a SemanticKITTI sequence folder with poses.txt and calib.txt)")
    source.with_poses = True
    names = box_class_names(dataset_cfg)
    speeds = max_speeds(names, parse_gates(args.track_max_speed, "--track-max-speed", zero=True))
    tracker = GreedyTracker(max_distances(names, parse_gates(args.track_distance)), args.track_max_age,
                            args.track_motion, speeds)
    return TrackedOutput(output, tracker)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("ckpt", help="checkpoint file or training run folder")
    p.add_argument("source", help="point file or folder, KITTI root, SemanticKITTI sequence, Waymo v2 segment, "
                                  "ScanNet scene")
    p.add_argument("--out", default="outputs/infer", help="output folder (default: outputs/infer)")
    p.add_argument("--split", default="val", help="ImageSets split of a KITTI root (default: val)")
    p.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0: all)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--render", action="store_true", help="also render each frame to <out>/render/<frame>.png")
    p.add_argument("--render-mode", default="auto", choices=("auto", "3d", "bev"))
    p.add_argument("--render-threshold", type=float, default=0.3, help="min score of rendered boxes")
    p.add_argument("--strict", action="store_true", help="stop at the first bad frame instead of skipping it")
    p.add_argument("--tta", help="test-time augmentation (segmentation, detection, mos, flow): the views mirror, "
                                 "flips, turns or d4 (pc3d.models.tta)")
    p.add_argument("--tta-scales", type=float, nargs="+", default=[1.0], help="each view at these scales")
    p.add_argument("--precision", default="run", choices=("run", "fp32", "bf16"),
                   help="the forward's precision: the run's train.precision (default; tools/test.py evaluates in it "
                        "too), or fp32 / bf16 autocast (bf16 falls back to fp32 on a CPU without bf16 instructions)")
    p.add_argument("--bayes-filter", action="store_true",
                   help="4D MOS: fuse each scan's flags over the overlapping windows (4DMOS's binary Bayes filter); "
                        "scans are written once no later window holds them")
    p.add_argument("--bayes-prior", type=float, default=0.25,
                   help="the filter's prior p(moving) (4DMOS: 0.25; each window adds its log-odds minus logit(prior))")
    p.add_argument("--flow-points", type=int, default=8192,
                   help="scene flow: points sampled per cloud after the crop (0: all of them; default 8192)")
    p.add_argument("--flow-max-depth", type=float, default=35.0, help="scene flow: crop at this depth x (m)")
    p.add_argument("--flow-fov", type=float, default=90.0, help="scene flow: azimuth kept around +x (degrees)")
    p.add_argument("--flow-min-z", type=float, default=-1.4, help="scene flow: drop points below this z (ground)")
    p.add_argument("--flow-keep-ground", action="store_true", help="scene flow: no ground cut")
    p.add_argument("--track", action="store_true",
                   help="detection over a sequence with poses: give each box a track id (greedy centre matching in "
                        "the world frame, CenterPoint's tracker; pc3d.infer.tracking)")
    p.add_argument("--track-distance", nargs="+", default=[], metavar="CLASS=METRES",
                   help="--track: how far a detection may lie from its track's predicted centre, per class "
                        "(defaults: pc3d.track.DEFAULT_MAX_DISTANCE, e.g. Vehicle 4, Pedestrian 1, Cyclist 2.5)")
    p.add_argument("--track-max-speed", nargs="+", default=[], metavar="CLASS=M/S",
                   help="--track: how fast a track seen once may have moved, per class, for the second association "
                        "stage (defaults: pc3d.track.greedy.DEFAULT_MAX_SPEED, e.g. Vehicle 30, Pedestrian 3, "
                        "Cyclist 10; 0: none)")
    p.add_argument("--track-max-age", type=int, default=3, help="--track: frames a track lives without a detection")
    p.add_argument("--track-motion", default="either", choices=MOTIONS,
                   help="--track: how a track predicts where it goes: its detection's velocity, its own "
                        "displacement, hybrid (the detection's until its second one, then its own) or either "
                        "(default: hybrid or its last detection's, whichever is nearer; pc3d.track.greedy); boxes "
                        "without velocities: its own")
    p.add_argument("--pad-features", action="store_true",
                   help="fill feature columns a cloud lacks with 0 and drop extra ones (default: refuse the frame)")
    args = p.parse_args(argv)
    if args.max_frames < 0:
        p.error(f"--max-frames must be >= 0, got {args.max_frames}")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        p.error(f"--device: not a torch device: {args.device!r} (cpu, cuda, cuda:1, ...)")
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error(f"--device {args.device}: CUDA is not available here")
    from pc3d.utils.cli import run_tool

    return run_tool("infer", run, args)


if __name__ == "__main__":
    sys.exit(main())
