"""Score a mean teacher's pseudo labels on the unlabelled scans of its own training run against the labels it was
never given: the teacher's argmax mIoU, and per class the share of points given a hard pseudo label and the share
of those labels that are right. Analysis only (the simulated world has every label; a training run never reads
them); the README's label-efficient figures come from it.

    python tools/pseudo_quality.py outputs/lim_mt_strfd_sim_semantickitti/<time>/checkpoints/step_00000440.pt
    python tools/pseudo_quality.py <checkpoint> --beta 0 1       # with and without the reflectivity prior

CHECKPOINT: a tools/train.py checkpoint of a mean-teacher model (its teacher, reflectivity prior and
thresholds as trained). The scans are the run's training split with its labelled frames left out
(--frames: another frame list to leave out), read without augmentation in batches of the run's size (the
thresholds are per batch, as in training).
"""
from __future__ import annotations

import argparse
import sys


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from pc3d.data.frame_selection import read_frame_list
    from pc3d.engine.runner import build_dataset, load_trained
    from pc3d.errors import ConfigError
    from pc3d.eval.segmentation import pseudo_label_quality

    model, cfg, _ = load_trained(args.checkpoint, use_ema=False)
    if not hasattr(model, "pseudo_label_confusion"):
        raise ConfigError(f"{args.checkpoint}: a {type(model).__name__} has no pseudo labels (a mean-teacher run's "
                          "checkpoint is needed)")
    listed = args.frames or cfg.dataset.get("labelled_frames")
    labelled = set(read_frame_list(listed)) if listed else set()
    cfg.dataset.labelled_frames = None
    data = build_dataset(cfg.dataset, cfg.splits.train, training=False)
    frames = [i for i, (seq, name) in enumerate(data.frames)
              if not (name.isdigit() and (int(seq), int(name)) in labelled)]
    print(f"{len(frames)} unlabelled of {len(data.frames)} training scans ({len(labelled)} listed in {listed})")
    size = int(cfg.train.batch_size)
    model.eval()
    for beta in args.beta if args.beta is not None else [model.beta]:
        model.beta = beta
        everything = np.zeros((model.num_classes, model.num_classes), np.int64)
        given = np.zeros_like(everything)
        for start in range(0, len(frames), size):
            batch = data.collate_fn([data[i] for i in frames[start:start + size]])
            conf_all, conf_hard = model.pseudo_label_confusion(batch)
            everything += conf_all.numpy()
            given += conf_hard.numpy()
        q = pseudo_label_quality(everything, given, data.class_names, model.ignore_index)
        print(f"\nbeta {beta:g}: teacher mIoU {100 * q['mIoU']:.2f}, hard labels on {100 * q['coverage']:.1f} % "
              f"of the points, {100 * q['accuracy']:.2f} % right")
        print("| class | points | IoU | hard-labelled | right |\n|---|---|---|---|---|")
        for name, c in q["per_class"].items():
            right = "-" if c["precision"] != c["precision"] else f"{100 * c['precision']:.1f} %"  # NaN: none named
            print(f"| {name} | {c['points']:,} | {100 * c['iou']:.1f} | {100 * c['coverage']:.1f} % | {right} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a mean-teacher run's checkpoint (.pt)")
    p.add_argument("--beta", type=float, nargs="+", help="weights of the reflectivity prior to score (default: the "
                                                         "run's)")
    p.add_argument("--frames", help="a frame list to leave out (default: the run's dataset.labelled_frames)")
    args = p.parse_args(argv)
    from pc3d.utils.cli import run_tool

    return run_tool("pseudo_quality", run, args)


if __name__ == "__main__":
    sys.exit(main())
