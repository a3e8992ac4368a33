"""Score SemanticKITTI-MOS prediction files against a dataset's labels, as the semantic-kitti-api's
evaluate_mos.py does: the moving IoU = TP / (TP + FP + FN) over every point of every scan of the sequences,
unlabelled points (MOS train id 0) left out; predictions and labels both through the MOS learning map
(9 / 251 of a submission -> static / moving).

    python tools/eval_mos.py outputs/infer_mos/labels data/sim_semantickitti_mos_seed1 --sequences 0 1

PREDICTIONS: the folder holding sequences/SS/predictions/NNNNNN.label (tools/test.py's predictions/,
tools/infer.py's <out>/labels). ROOT: the dataset (sequences/SS/velodyne, labels). Every labelled scan needs
its prediction file (a missing one is named); --allow-missing scores only the scans that have one (the last
n_past_scans scans of a Bayes-filtered stream exist; a stream cut short does not).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from pc3d.data import SemanticKittiDataset
    from pc3d.data.io import read_label
    from pc3d.errors import DataFormatError
    from pc3d.eval.segmentation import MosAccumulator

    data = SemanticKittiDataset(args.root, split="valid", mode="mos", sequences=args.sequences)
    acc, scored, missing = MosAccumulator(), 0, []
    for seq, name in data.frames:
        path = Path(args.predictions) / "sequences" / seq / "predictions" / f"{name}.label"
        if not path.is_file():
            missing.append(path)
            continue
        points, labels, _ = data.read_scan(seq, name)
        if labels is None:
            raise DataFormatError(Path(args.root) / "sequences" / seq, "no labels/ folder to score against")
        raw = read_label(path, len(points)) & 0xFFFF
        pred = data.lut[raw.clip(max=len(data.lut) - 1)]
        if ((raw >= len(data.lut)) | (pred < 0)).any():
            raise DataFormatError(path, "holds ids outside the MOS learning map (expected 9 static / 251 moving)")
        acc.update(pred == 2, labels == 2, labels == 0)
        scored += 1
    if missing and not args.allow_missing:
        raise DataFormatError(missing[0], f"missing ({len(missing)} of {len(data.frames)} scans have no prediction; "
                                          "--allow-missing scores the others)")
    tp, fp, fn = acc.counts.tolist()
    print(f"moving IoU {100 * acc.iou():.2f} over {scored} scans of sequences {data.sequences} "
          f"(TP {tp:,}, FP {fp:,}, FN {fn:,}){f'; {len(missing)} scans without a prediction' if missing else ''}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("predictions", help="folder holding sequences/SS/predictions/*.label")
    p.add_argument("root", help="the dataset root (sequences/SS/velodyne, labels)")
    p.add_argument("--sequences", nargs="+", type=int, required=True, help="sequence numbers to score")
    p.add_argument("--allow-missing", action="store_true", help="score only the scans that have a prediction")
    args = p.parse_args(argv)
    from pc3d.utils.cli import run_tool

    return run_tool("eval_mos", run, args)


if __name__ == "__main__":
    sys.exit(main())
