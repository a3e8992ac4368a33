"""Run a trained detector or segmentor over a LiDAR sequence (or RGB-D scenes), frame by frame.

    python tools/infer.py CKPT SOURCE [--out DIR] [--render] [--max-frames N] [--split val]

CKPT: a checkpoint written by tools/train.py (or a run folder: its best.pt, else the newest save).
SOURCE: a point file (.bin float32, as many columns as the model reads: x y z intensity for LiDAR
models, x y z r g b for ScanNet models; .npy / .npz, .pcd, .ply); a folder of them; a KITTI root
(training/velodyne + calib, ImageSets/<split>.txt; field-of-view crop and calibration used); a
SemanticKITTI sequence folder (velodyne/*.bin). Waymo v2 segments: not supported yet.

Detectors write per frame <out>/kitti/<frame>.txt (KITTI label_2 with scores; camera frame through
the frame's calibration, or the simulator's KITTI calibration for bare point files) and
<out>/json/<frame>.json (LiDAR-frame boxes, scores, labels, class names). Segmentors write one
label per input point: <out>/labels/<frame>.label (SemanticKITTI raw ids, uint32) for
SemanticKITTI models, <out>/labels/<frame>.txt (ScanNet nyu40 ids, the benchmark's format) for
ScanNet models, <out>/labels/<frame>.npy (train ids) otherwise, plus a per-class point count in
<out>/json/<frame>.json; points outside the model's range get the ignored label (raw 0). ScanNet
colours above 1 are read as 0..255 and scaled to the 0..1 the models train on. With --render also
<out>/render/<frame>.png (segmentations coloured by predicted class). Prints latency p50 / p95 per
stage (read, voxelize, vfe, 3D backbone, BEV, head, post-processing) and the throughput.
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
STAGES = ("read", "voxelize", "vfe", "backbone_3d", "bev", "head", "post_process", "segment")


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


def read_points(path: Path, columns: int, bin_columns: int = 4) -> np.ndarray:
    """float32 [N, columns]: x, y, z, then features (missing ones zero, extra ones dropped). A .bin file
    holds bin_columns float32 per point."""
    ext = path.suffix.lower()
    if ext == ".bin":
        from pc3d.data.io import read_bin

        pts = read_bin(path, bin_columns)
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

def load_model(ckpt: str | Path, device: str = "cpu"):
    """(model in eval mode, the run config as an OmegaConf node, checkpoint path) of a tools/train.py
    checkpoint."""
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

class Renders:
    """PNG renders of the frames: Open3D offscreen (made once, on first use), else BEV images."""

    def __init__(self, out: Path, mode: str, bev_area):
        self.out, self.mode, self.bev_area = out / "render", mode, bev_area
        self.renderer, self.paths = None, []

    def __call__(self, scene) -> None:
        from pc3d.viz import OffscreenRenderer, render_scene_png

        if self.renderer is None and self.mode != "bev":
            try:
                self.renderer = OffscreenRenderer()
            except Exception as exc:  # noqa: BLE001 - fall back to BEV images
                print(f"3D renderer unavailable ({exc}); writing BEV images", flush=True)
                self.mode = "bev"
        path, self.used = render_scene_png(scene, self.out / f"{scene.name}.png", self.renderer, self.mode,
                                           self.bev_area, 0.1)
        self.paths.append(path)

    def report(self) -> None:
        if self.paths:
            print(f"renders ({self.used}): {self.out} ({len(self.paths)} PNGs)", flush=True)


def dataset_transforms(cfg):
    """The run's evaluation transforms without shuffling (and without the range crop: callers crop)."""
    from hydra.utils import instantiate

    from pc3d.data.transforms import Compose

    return Compose([t for t in instantiate(cfg.dataset.transforms, _convert_="all")
                    if type(t).__name__ not in ("PointShuffle", "RangeCrop")])


def run(args: argparse.Namespace) -> int:
    from hydra.utils import instantiate

    from pc3d.data.batch import Collate

    model, cfg, ckpt_path = load_model(args.ckpt, args.device)
    frames = list_frames(Path(args.source), args.split)[: args.max_frames or None]
    out = Path(args.out)
    (out / "json").mkdir(parents=True, exist_ok=True)
    collate = Collate(instantiate(cfg.dataset.voxelizer, _convert_="all"))
    print(f"{type(model).__name__} from {ckpt_path}; {len(frames)} frames from {args.source}", flush=True)
    segment = str(cfg.model.get("_target_", "")).endswith("Segmentor")
    records, wall, renders = (run_segmentation if segment else run_detection)(args, model, cfg, frames, collate)
    print(latency_table(records, wall), flush=True)
    if renders is not None:
        renders.report()
    return 0


def _crop(points: np.ndarray, cfg) -> np.ndarray:
    from pc3d.data.transforms.point_ops import in_range

    return in_range(points, np.asarray(cfg.dataset.point_cloud_range, np.float32))


def run_detection(args, model, cfg, frames, collate):
    from tqdm import tqdm

    from pc3d.data.kitti import IMAGE_SHAPE, fov_mask
    from pc3d.eval import write_kitti_label
    from pc3d.eval.kitti_io import to_kitti_anno
    from pc3d.geometry import KittiCalib
    from pc3d.sim.ground_truth import kitti_calib

    device = torch.device(args.device)
    columns = int(cfg.model.vfe.in_channels)
    class_names = list(cfg.dataset.class_names)
    transforms = dataset_transforms(cfg)
    fov_only = bool(cfg.dataset.get("fov_only", False))
    out = Path(args.out)
    (out / "kitti").mkdir(parents=True, exist_ok=True)
    renders = Renders(out, args.render_mode, list(cfg.dataset.point_cloud_range)) if args.render else None
    if args.render:
        from pc3d.viz import Scene
    timer = StageTimer(model, device)
    records = []
    default_calib = kitti_calib()
    start = time.perf_counter()
    for frame in tqdm(frames, unit="frame", dynamic_ncols=True):
        rec: dict[str, float] = {}
        t0 = time.perf_counter()
        points = read_points(frame["path"], columns)
        calib = KittiCalib.from_file(frame["calib"]) if frame["calib"] and frame["calib"].is_file() else None
        if calib is not None and fov_only:
            points = points[fov_mask(points, calib, IMAGE_SHAPE)]
        points = points[_crop(points, cfg)]
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
        if renders is not None:
            keep = pred["scores"] >= args.render_threshold
            renders(Scene(points, None, pred["boxes"][keep], pred["scores"][keep], pred["labels"][keep],
                          name=frame["frame_id"]))
    wall = time.perf_counter() - start
    print(f"predictions: {out / 'kitti'} (KITTI txt), {out / 'json'} (JSON)", flush=True)
    return records, wall, renders


def label_format(cfg):
    """(dataset kind 'semantickitti' | 'scannet' | 'other', class names, palette [K, 3], writer of one frame's
    train ids [N] (-1 / ignore for unlabelled points) to a file stem)."""
    from pc3d.viz.colors import SCANNET20_COLORS, generated_palette, semantickitti_palette

    target = str(cfg.dataset.get("_target_", ""))
    num_classes = int(cfg.model.num_classes)
    if target.endswith("SemanticKittiDataset"):
        from pc3d.data.semantickitti import LEARNING_MAPS, MODES, load_learning_map
        from pc3d.eval.seg_writer import inverse_lookup

        config = load_learning_map(str(cfg.dataset.get("learning_map") or
                                       LEARNING_MAPS / MODES[cfg.dataset.get("mode", "semantic")]))
        lut = inverse_lookup(config["learning_map_inv"])
        names = [config["labels"][int(config["learning_map_inv"][i])] for i in range(len(lut))]

        def write(stem: Path, ids: np.ndarray) -> Path:
            lut[np.clip(ids, 0, len(lut) - 1)].astype("<u4").tofile(stem.with_suffix(".label"))
            return stem.with_suffix(".label")

        return "semantickitti", names, semantickitti_palette(config["learning_map_inv"], config["color_map"]), write
    if target.endswith("ScanNetDataset"):
        from pc3d.data.scannet import SCANNET20_CLASSES, SCANNET20_IDS

        nyu40 = np.asarray((0, *SCANNET20_IDS), np.int64)  # train id -1 (unlabelled) -> 0

        def write(stem: Path, ids: np.ndarray) -> Path:
            np.savetxt(stem.with_suffix(".txt"), nyu40[ids + 1], fmt="%d")
            return stem.with_suffix(".txt")

        return "scannet", list(SCANNET20_CLASSES), SCANNET20_COLORS, write

    def write(stem: Path, ids: np.ndarray) -> Path:
        np.save(stem.with_suffix(".npy"), ids)
        return stem.with_suffix(".npy")

    return "other", [str(i) for i in range(num_classes)], generated_palette(num_classes), write


def run_segmentation(args, model, cfg, frames, collate):
    from tqdm import tqdm

    device = torch.device(args.device)
    columns = int(cfg.model.backbone.in_channels)
    kind, names, palette, write = label_format(cfg)
    ignore = int(cfg.model.get("ignore_index", -1))
    transforms = dataset_transforms(cfg)
    out = Path(args.out)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    renders = Renders(out, args.render_mode, list(cfg.dataset.point_cloud_range)) if args.render else None
    if args.render:
        from pc3d.viz import Scene
    records = []
    start = time.perf_counter()
    for frame in tqdm(frames, unit="frame", dynamic_ncols=True):
        rec: dict[str, float] = {}
        t0 = time.perf_counter()
        points = read_points(frame["path"], columns, bin_columns=columns)
        if kind == "scannet" and columns >= 6 and len(points) and points[:, 3:6].max() > 1.0:
            points[:, 3:6] /= 255.0  # ScanNet .bin files (mmdetection3d's) keep colours in 0..255
        inside = _crop(points, cfg)
        sample = transforms({"frame_id": frame["frame_id"], "points": points[inside], "seed": 0},
                            np.random.default_rng(0))
        rec["read"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        batch = collate([sample])
        rec["voxelize"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        with torch.no_grad():
            pred = model({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()})[0]
        rec["segment"] = time.perf_counter() - t0
        rec["total"] = rec["read"] + rec["voxelize"] + rec["segment"]
        records.append(rec)
        labels = np.full(len(points), ignore, np.int64)
        labels[inside] = pred["pred_labels"]
        path = write(out / "labels" / frame["frame_id"], labels)
        ids, counts = np.unique(labels, return_counts=True)
        (out / "json" / f"{frame['frame_id']}.json").write_text(json.dumps({
            "frame_id": frame["frame_id"], "source": str(frame["path"]), "labels": str(path),
            "points_per_class": {(names[i] if 0 <= i < len(names) else "unlabelled"): int(c)
                                 for i, c in zip(ids.tolist(), counts.tolist(), strict=True)}}))
        if renders is not None:
            renders(Scene(points, point_labels=labels, palette=palette, name=frame["frame_id"],
                          view="overview" if kind == "scannet" else "driving"))
    wall = time.perf_counter() - start
    print(f"predictions: {out / 'labels'} (one label per point), {out / 'json'} (per-class counts)", flush=True)
    return records, wall, renders


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("ckpt", help="checkpoint file or training run folder")
    p.add_argument("source", help="point file, folder, KITTI root, SemanticKITTI sequence or ScanNet .bin scene")
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
