"""Score the weight-free scene-flow baselines (zero flow, nearest neighbour, ICP) on a flow dataset, through the
dataset's evaluation hook as tools/test.py scores a trained model: the reference rows of a flow table.

    python tools/flow_baselines.py sim_sceneflow --root data/sim_sceneflow_seed1 --split val
    python tools/flow_baselines.py sim_sceneflow --root data/sim_sceneflow_kitti_seed1 --variant kitti \
        --calib-dir data/sim_sceneflow_kitti_seed1/calib_cam_to_cam
    python tools/flow_baselines.py sim_sequence_flow

DATASET: a configs/dataset/ name. Prints one markdown row per baseline (EPE3D m, AccS / AccR / Outliers %, and
PointPWC's EPE2D px / Acc2D % where the dataset has cameras: FlyingThings3D, KITTI with --calib-dir) and writes
them to --out (JSON) when given.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# metric -> (column head, format)
COLUMNS = {"EPE3D": ("EPE3D (m)", ".4f"), "AccS": ("AccS (%)", ".2f"), "AccR": ("AccR (%)", ".2f"),
           "Outliers": ("Outliers (%)", ".2f"), "EPE2D": ("EPE2D (px)", ".3f"), "Acc2D": ("Acc2D (%)", ".2f")}


def run(args: argparse.Namespace) -> int:
    from _common import dataset_config
    from omegaconf import OmegaConf

    from pc3d.engine.distributed import DistInfo
    from pc3d.engine.evaluator import evaluate
    from pc3d.engine.runner import build_dataset, build_evaluator
    from pc3d.models.flow.baselines import BASELINES

    node = OmegaConf.create(dataset_config(args.dataset))
    for key, value in (("root", args.root), ("variant", args.variant), ("calib_dir", args.calib_dir)):
        if value is not None:
            node[key] = value
    node.voxelizer = None  # the baselines read points, not voxels
    split = args.split or node.get("split") or "val"
    dataset = build_dataset(node, split, training=False)
    evaluator = build_evaluator(OmegaConf.create({"dataset": node}))
    rows = {name: evaluate(cls().eval(), dataset, batch_size=4, workers=0, info=DistInfo(), evaluator=evaluator)[0]
            for name, cls in BASELINES.items()}
    columns = [k for k in COLUMNS if k in next(iter(rows.values()))]
    lines = [f"### flow baselines · {args.dataset} · {node.root} · {split} ({len(dataset)} pairs)", "",
             "| baseline | " + " | ".join(COLUMNS[k][0] for k in columns) + " |", "| --- |" + " --- |" * len(columns)]
    for name, metrics in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{metrics[k]:{COLUMNS[k][1]}}" for k in columns) + " |")
    print("\n".join(lines), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"dataset": args.dataset, "root": str(node.root), "split": split,
                                              "pairs": len(dataset), "metrics": rows}, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", help="a configs/dataset/ name (sim_sceneflow, sceneflow_kitti, sim_sequence_flow, ...)")
    p.add_argument("--root", help="dataset.root (default: the config's)")
    p.add_argument("--variant", help="dataset.variant of a SceneFlowDataset: flyingthings3d or kitti")
    p.add_argument("--calib-dir", help="dataset.calib_dir of a KITTI SceneFlowDataset (calib_cam_to_cam files): "
                                       "adds EPE2D / Acc2D")
    p.add_argument("--split", help="split (default: the config's, else val)")
    p.add_argument("--out", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    from pc3d.utils.cli import run_tool

    return run_tool("flow_baselines", run, args)


if __name__ == "__main__":
    sys.exit(main())
