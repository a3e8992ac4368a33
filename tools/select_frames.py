"""Choose the labelled frames of a SemanticKITTI-layout training split: ST-RFD (Less is More) and the uniform
baseline, written as frame lists (one ``SS/NNNNNN`` per line) that a recipe names with
``dataset.labelled_frames``.

    python tools/select_frames.py data/sim_semantickitti_lim --fraction 0.05
    # -> data/sim_semantickitti_lim/frame_lists/{st_rfd,uniform}_5.txt

ROOT: the dataset (sequences/SS/velodyne, poses.txt, calib.txt). --split: the learning map's split whose
sequences are read (train), or --sequences. --out: the folder of the lists (ROOT/frame_lists).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from pc3d.data import SemanticKittiDataset
    from pc3d.data.frame_selection import select_frames, write_frame_list

    sequences = "all" if args.sequences == ["all"] else args.sequences
    data = SemanticKittiDataset(args.root, split=args.split, sequences=sequences)
    sequences = []
    for seq in data.sequences:  # the scans on disk, by number (a sequence may start after 0 or have gaps)
        scans = [int(name) for s, name in data.frames if s == seq]
        if scans:
            poses, _ = data.sequence_poses(seq)
            sequences.append((int(seq), scans, poses[scans]))
    out = Path(args.out) if args.out else Path(args.root) / "frame_lists"
    percent = f"{100 * args.fraction:g}".replace(".", "p")
    for method in ("st_rfd", "uniform"):
        kept = select_frames(sequences, args.fraction, method)
        path = write_frame_list(out / f"{method}_{percent}.txt", kept)
        print(f"{method}: {len(kept)} of {len(data.frames)} frames -> {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", help="the dataset root (sequences/SS/velodyne, poses.txt, calib.txt)")
    p.add_argument("--fraction", type=float, required=True, help="share of the frames to label, e.g. 0.05")
    p.add_argument("--split", default="train", help="the learning map's split to read (default: train)")
    p.add_argument("--sequences", nargs="+", help="sequence numbers instead of --split, or 'all' (every folder)")
    p.add_argument("--out", help="folder of the frame lists (default: ROOT/frame_lists)")
    args = p.parse_args(argv)
    from pc3d.utils.cli import run_tool

    return run_tool("select_frames", run, args)


if __name__ == "__main__":
    sys.exit(main())
