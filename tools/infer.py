"""Run a trained detector over a LiDAR sequence, frame by frame.

    python tools/infer.py CKPT SOURCE [--out DIR] [--render] [--max-frames N] [--split val]

CKPT: a checkpoint written by tools/train.py (or a run folder: its best.pt, else the newest save).
SOURCE: a point file (.bin float32 x y z intensity, .npy / .npz, .pcd, .ply); a folder of them; a
KITTI root (training/velodyne + calib, ImageSets/<split>.txt; field-of-view crop and calibration
used); a SemanticKITTI sequence folder (velodyne/*.bin). Waymo v2 segments: not supported yet.

Writes per frame <out>/kitti/<frame>.txt (KITTI label_2 with scores; camera frame through the
frame's calibration, or the simulator's KITTI calibration for bare point files) and
<out>/json/<frame>.json (LiDAR-frame boxes, scores, labels, class names); with --render also
<out>/render/<frame>.png. Prints latency p50 / p95 per stage (read, voxelize, vfe, 3D backbone,
BEV, head, post-processing) and the throughput.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pc3d.errors import ConfigError, DataFormatError  # noqa: E402

POINT_EXTS = (".bin", ".npy", ".npz", ".pcd", ".ply")
STAGES = ("read", "voxelize", "vfe", "backbone_3d", "bev", "head", "post_process")


# ---------------------------------------------------------------- sources

def list_frames(source: Path, split: str = "val") -> list[dict]:
    """[{"frame_id", "path", "calib" (path or None)}] of a file, folder, KITTI root or SemanticKITTI sequence."""
    if source.is_file():
        return [{"frame_id": source.stem, "path": source, "calib": None}]
    if not source.is_dir():
        raise DataFormatError(source, "no such file or folder")
    velodyne = source / "training" / "velodyne"
    if velodyne.is_dir():  # KITTI object layout
        ids_file = source / "ImageSets" / f"{split}.txt"
        ids = ids_file.read_text().split() if ids_file.is_file() else sorted(p.stem for p in velodyne.glob("*.bin"))
        return [{"frame_id": i, "path": velodyne / f"{i}.bin", "calib": source / "training" / "calib" / f"{i}.txt"}
                for i in ids]
    if (source / "velodyne").is_dir():  # SemanticKITTI sequence
        return [{"frame_id": p.stem, "path": p, "calib": None} for p in sorted((source / "velodyne").glob("*.bin"))]
    if (source / "sequences").is_dir():
        raise DataFormatError(source, "a SemanticKITTI root: pass one sequence folder, e.g. sequences/08")
    files = sorted(p for p in source.iterdir() if p.suffix.lower() in POINT_EXTS)
    if not files:
        raise DataFormatError(source, f"no point files ({', '.join(POINT_EXTS)}) in the folder")
    return [{"frame_id": p.stem, "path": p, "calib": None} for p in files]


def read_points(path: Path, columns: int) -> np.ndarray:
    """float32 [N, columns]: x, y, z, then features (missing ones zero, extra ones dropped)."""
    ext = path.suffix.lower()
    if ext == ".bin":
        from pc3d.data.io import read_bin

        pts = read_bin(path, 4)
    elif ext in (".npy", ".npz"):
        data = np.load(path)
        pts = data[data.files[0]] if ext == ".npz" else data
    elif ext in (".pcd", ".ply"):
        import open3d as o3d

        pts = np.asarray(o3d.io.read_point_cloud(str(path)).points)
    else:
        raise DataFormatError(path, f"unsupported point file type {ext}")
    pts = np.asarray(pts, np.float32).reshape(len(pts), -1)
    if pts.shape[1] < 3:
        raise DataFormatError(path, f"points need at least x, y, z columns, got {pts.shape[1]}")
    out = np.zeros((len(pts), columns), np.float32)
    out[:, :min(columns, pts.shape[1])] = pts[:, :columns]
    return out


# ---------------------------------------------------------------- model

def load_detector(ckpt: str | Path, device: str = "cpu"):
    """(model in eval mode, the run config as an OmegaConf node) of a tools/train.py checkpoint."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from pc3d.engine.checkpoint import load_checkpoint
    from pc3d.engine.runner import find_checkpoint

    path = find_checkpoint(str(ckpt), None) if Path(ckpt).is_file() else find_checkpoint(None, str(ckpt))
    state = load_checkpoint(path)
    if not state.get("config"):
        raise ConfigError(f"{path}: has no stored config; it was not written by tools/train.py")
    cfg = OmegaConf.create(state["config"])
    model = instantiate(cfg.model, _convert_="all")
    model.load_state_dict(state["ema"]["model"] if state.get("ema") else state["model"])
    return model.to(device).eval(), cfg, path


class StageTimer:
    """Wall time of the detector's stages via forward hooks (synchronising CUDA)."""

    PARTS = {"vfe": "vfe", "backbone_3d": "backbone_3d", "map_to_bev": "bev", "backbone_2d": "bev",
             "dense_head": "head", "post_process": "post_process"}

    def __init__(self, model: torch.nn.Module, device: torch.device):
        self.times: dict[str, float] = defaultdict(float)
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        for attr, stage in self.PARTS.items():
            module = getattr(model, attr, None)
            if isinstance(module, torch.nn.Module):
                module.register_forward_pre_hook(self._start)
                module.register_forward_hook(self._stop(stage))
        self._t0 = 0.0

    def _start(self, *_):
        self.sync()
        self._t0 = time.perf_counter()

    def _stop(self, stage):
        def hook(*_):
            self.sync()
            self.times[stage] += time.perf_counter() - self._t0
        return hook

    def reset(self) -> None:
        self.times = defaultdict(float)


def latency_table(records: list[dict[str, float]], wall: float) -> str:
    lines = ["| stage | p50 ms | p95 ms | mean ms | share |", "| --- | --- | --- | --- | --- |"]
    total = np.array([r["total"] for r in records])
    for stage in (*STAGES, "total"):
        v = np.array([r.get(stage, 0.0) for r in records]) * 1e3
        if stage != "total" and not v.any():
            continue
        share = v.sum() / max(total.sum() * 1e3, 1e-9)
        lines.append(f"| {stage} | {np.percentile(v, 50):.1f} | {np.percentile(v, 95):.1f} | {v.mean():.1f} | "
                     f"{share:.0%} |")
    n = len(records)
    lines.append(f"\n{n} frames in {wall:.1f} s: {n / max(wall, 1e-9):.2f} frames/s end to end, "
                 f"{n / max(total.sum(), 1e-9):.2f} frames/s model + I/O (first frame included; it pays the "
                 "numba / kernel-map warm-up)")
    return "\n".join(lines)


# ---------------------------------------------------------------- main

def run(args: argparse.Namespace) -> int:
    from hydra.utils import instantiate
    from tqdm import tqdm

    from pc3d.data.batch import Collate
    from pc3d.data.kitti import IMAGE_SHAPE, fov_mask
    from pc3d.data.transforms import Compose
    from pc3d.eval import write_kitti_label
    from pc3d.geometry import KittiCalib
    from pc3d.models.detectors.kitti_evaluator import to_kitti_anno
    from pc3d.sim.ground_truth import kitti_calib

    device = torch.device(args.device)
    model, cfg, ckpt_path = load_detector(args.ckpt, args.device)
    columns = int(cfg.model.vfe.in_channels)
    class_names = list(cfg.dataset.class_names)
    pc_range = list(cfg.dataset.point_cloud_range)
    transforms = Compose([t for t in instantiate(cfg.dataset.transforms, _convert_="all")
                          if type(t).__name__ != "PointShuffle"])
    collate = Collate(instantiate(cfg.dataset.voxelizer, _convert_="all"))
    fov_only = bool(cfg.dataset.get("fov_only", False))
    frames = list_frames(Path(args.source), args.split)[: args.max_frames or None]
    out = Path(args.out)
    (out / "kitti").mkdir(parents=True, exist_ok=True)
    (out / "json").mkdir(parents=True, exist_ok=True)
    renderer = None
    if args.render:
        from pc3d.viz import OffscreenRenderer, Scene, render_scene_png
    timer = StageTimer(model, device)
    records, rendered, render_mode = [], [], None
    default_calib = kitti_calib()
    print(f"{type(model).__name__} from {ckpt_path}; {len(frames)} frames from {args.source}", flush=True)
    start = time.perf_counter()
    for frame in tqdm(frames, unit="frame", dynamic_ncols=True):
        rec: dict[str, float] = {}
        t0 = time.perf_counter()
        points = read_points(frame["path"], columns)
        calib = KittiCalib.from_file(frame["calib"]) if frame["calib"] and frame["calib"].is_file() else None
        if calib is not None and fov_only:
            points = points[fov_mask(points, calib, IMAGE_SHAPE)]
        sample = transforms({"frame_id": frame["frame_id"], "points": points, "seed": 0},
                            np.random.default_rng(0))
        rec["read"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        batch = collate([sample])
        rec["voxelize"] = time.perf_counter() - t0
        timer.reset()
        t0 = time.perf_counter()
        with torch.no_grad():
            pred = model({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()})[0]
        model_time = time.perf_counter() - t0
        rec.update(timer.times)
        rec["head"] = rec.get("head", 0.0) + max(0.0, model_time - sum(timer.times.values()))  # + decoding
        rec["total"] = rec["read"] + rec["voxelize"] + model_time
        records.append(rec)
        anno = to_kitti_anno(pred, calib or default_calib, IMAGE_SHAPE if calib is not None else None, class_names)
        write_kitti_label(out / "kitti" / f"{frame['frame_id']}.txt", anno)
        (out / "json" / f"{frame['frame_id']}.json").write_text(json.dumps({
            "frame_id": frame["frame_id"], "source": str(frame["path"]), "frame": "lidar",
            "boxes": np.round(pred["boxes"], 4).tolist(), "scores": np.round(pred["scores"], 4).tolist(),
            "labels": pred["labels"].tolist(), "names": [class_names[k - 1] for k in pred["labels"]]}))
        if args.render:
            keep = pred["scores"] >= args.render_threshold
            scene = Scene(points, None, pred["boxes"][keep], pred["scores"][keep], pred["labels"][keep],
                          name=frame["frame_id"])
            if renderer is None and args.render_mode != "bev":
                try:
                    renderer = OffscreenRenderer()
                except Exception as exc:  # noqa: BLE001 - fall back to BEV images
                    print(f"3D renderer unavailable ({exc}); writing BEV images", flush=True)
                    args.render_mode = "bev"
            path, render_mode = render_scene_png(scene, out / "render" / f"{frame['frame_id']}.png", renderer,
                                                 args.render_mode, pc_range, 0.1)
            rendered.append(path)
    wall = time.perf_counter() - start
    print(latency_table(records, wall), flush=True)
    print(f"predictions: {out / 'kitti'} (KITTI txt), {out / 'json'} (JSON)", flush=True)
    if rendered:
        print(f"renders ({render_mode}): {rendered[0].parent} ({len(rendered)} PNGs)", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("ckpt", help="checkpoint file or training run folder")
    p.add_argument("source", help="point file, folder, KITTI root or SemanticKITTI sequence")
    p.add_argument("--out", default="outputs/infer", help="output folder (default: outputs/infer)")
    p.add_argument("--split", default="val", help="ImageSets split of a KITTI root (default: val)")
    p.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0: all)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--render", action="store_true", help="also render each frame to <out>/render/<frame>.png")
    p.add_argument("--render-mode", default="auto", choices=("auto", "3d", "bev"))
    p.add_argument("--render-threshold", type=float, default=0.3, help="min score of rendered boxes")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
