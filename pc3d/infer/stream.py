"""The streaming loop of tools/infer.py: frame by frame, read -> transforms -> voxelize -> model stages -> write.

Stateful steps: the model and the `prepare` step, when they have ``start_sequence(name)``, are told when
a new sequence starts, before its first frame is prepared (a 4D MOS run prepares each frame through a
``pc3d.infer.scan_window.ScanWindow``, which keeps the past scans and drops them there). Latency is measured
per stage: read (the source), prepare (the scan window, the evaluation transforms), voxelize, every direct
child module of the model (forward hooks: e.g. vfe, backbone_3d, map_to_bev, backbone_2d, dense_head), the
rest of the model's forward ("model_other": decoding, glue) and the output writing.
"""
from __future__ import annotations

import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pc3d.engine.optim import autocast
from pc3d.errors import DataFormatError
from pc3d.infer.sources import Source, SourceFrame


def stages(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The (name, module) stages of a model: its direct children, a child that is itself a model (has a
    ``task``) replaced by its own stages."""
    out = []
    for name, module in model.named_children():
        out += stages(module) if hasattr(module, "task") else [(name, module)]
    return out


class StageTimer:
    """Wall time of each direct child module of a model per forward (forward pre / post hooks), summed over the
    calls of a frame; a child that is itself a model (has a ``task``: the model inside test-time augmentation)
    is timed by its own children."""

    def __init__(self, model: nn.Module, device: torch.device):
        self.times: dict[str, float] = defaultdict(float)
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self._starts: dict[str, float] = {}
        for name, module in stages(model):
            module.register_forward_pre_hook(self._start(name))
            module.register_forward_hook(self._stop(name))

    def _start(self, name: str):
        def hook(*_):
            self.sync()
            self._starts[name] = time.perf_counter()
        return hook

    def _stop(self, name: str):
        def hook(*_):
            self.sync()
            self.times[name] += time.perf_counter() - self._starts.pop(name)
        return hook

    def take(self) -> dict[str, float]:
        times, self.times = dict(self.times), defaultdict(float)
        return times


def latency_table(records: list[dict[str, float]], wall: float) -> str:
    """Markdown table of per-stage p50 / p95 / mean (ms) and share, in first-seen stage order, the ratio of a
    frame's total to its model forward (p50), plus throughput."""
    stages: list[str] = []
    for rec in records:
        stages += [k for k in rec if k not in stages and k != "total"]
    total = np.array([r["total"] for r in records])
    lines = ["| stage | p50 ms | p95 ms | mean ms | share |", "| --- | --- | --- | --- | --- |"]
    for stage in (*stages, "total"):
        v = np.array([r.get(stage, 0.0) for r in records]) * 1e3
        share = v.sum() / max(total.sum() * 1e3, 1e-9)
        lines.append(f"| {stage} | {np.percentile(v, 50):.1f} | {np.percentile(v, 95):.1f} | {v.mean():.1f} | "
                     f"{share:.0%} |")
    outside = ("read", "prepare", "voxelize", "write", "total")
    model = np.array([sum(v for k, v in r.items() if k not in outside) for r in records])
    if model.size and np.percentile(model, 50) > 0:
        lines.append(f"\nper frame / model forward (p50): {np.percentile(total, 50) / np.percentile(model, 50):.2f}x "
                     "(everything but the model's own stages: read, prepare, voxelize, write)")
    n = len(records)
    lines.append(f"\n{n} frames in {wall:.1f} s: {n / max(wall, 1e-9):.2f} frames/s end to end (the first frame "
                 "included: it pays the numba / kernel-map warm-up)")
    return "\n".join(lines)


def stream(model: nn.Module, source: Source, prepare: Callable[[SourceFrame], dict], collate, output,
           device: torch.device, render: Callable | None = None, max_frames: int = 0,
           progress: Callable = iter, strict: bool = False, precision: str = "fp32"
           ) -> tuple[list[dict], float, dict[str, str], dict[str, int]]:
    """Run `model` over the frames of `source`; returns (per-frame stage times in seconds, wall time,
    {frame: problem} of the bad frames skipped, {frame: rows dropped for NaN / inf}).

    prepare(frame) -> a sample (the dataset's evaluation transforms applied), or None when it waits for more
    frames (scene-flow pairs); a sample's ``source_frame`` (popped) is the frame its prediction belongs to
    (default: the frame just read); collate: samples -> batch;
    output.write(frame, prediction) -> a Scene (or None: nothing final yet), passed to render when given. A
    frame that cannot be read (a DataFormatError) is skipped with one line saying which and why, unless
    `strict` or the source has one frame; when every frame is bad, the run fails. A frame whose NaN / inf
    rows were dropped gets one line saying how many. precision: the model's forward under autocast ("bf16"), as
    tools/test.py evaluates a run trained in bf16, or not ("fp32").
    """
    timer = StageTimer(model, device)
    restarts = [hook for hook in (getattr(model, "start_sequence", None), getattr(prepare, "start_sequence", None))
                if callable(hook)]
    gap = getattr(prepare, "frame_skipped", None)  # a pair-wise step must not pair across a skipped frame
    sequence = None
    records, skipped, dropped = [], {}, {}
    start = time.perf_counter()
    items = source.items[:max_frames] if max_frames else source.items
    strict = strict or len(items) == 1  # one frame: its problem is the run's
    for item in progress(items):
        rec: dict[str, float] = {}
        t0 = time.perf_counter()
        try:
            frame = source.read(item)
            rec["read"] = time.perf_counter() - t0
            if frame.sequence != sequence:
                for restart in restarts:
                    restart(frame.sequence)
                sequence = frame.sequence
            t0 = time.perf_counter()
            sample = prepare(frame)
            rec["prepare"] = time.perf_counter() - t0
        except DataFormatError as error:
            if strict:
                raise
            skipped[str(item)] = str(error)
            print(f"skipping a bad frame: {error}", file=sys.stderr, flush=True)
            if callable(gap):
                gap()
            continue
        if sample is None:  # a pair-wise step (scene flow) waits for the next frame
            continue
        frame = sample.pop("source_frame", frame)
        if frame.extra.get("dropped"):
            dropped[frame.frame_id] = int(frame.extra["dropped"])
            print(f"{frame.source}: dropped {dropped[frame.frame_id]} of {len(frame.extra['kept'])} points with NaN / "
                  "inf", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        batch = collate([sample])
        rec["voxelize"] = time.perf_counter() - t0
        timer.take()
        t0 = time.perf_counter()
        with torch.no_grad(), autocast(precision, device):
            pred = model({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()})[0]
        model_time = time.perf_counter() - t0
        stages = timer.take()
        rec.update(stages)
        rec["model_other"] = max(0.0, model_time - sum(stages.values()))
        t0 = time.perf_counter()
        scene = output.write(frame, pred)
        rec["write"] = time.perf_counter() - t0
        rec["total"] = sum(rec.values())
        records.append(rec)
        if render is not None and scene is not None:  # a delayed writer (Bayes filter) may have nothing yet
            render(scene)
    if not records:
        first = next(iter(skipped.values()), "")
        raise DataFormatError(source.path, f"all {len(items)} frames are bad (listed above; the first: {first})")
    return records, time.perf_counter() - start, skipped, dropped


class Renders:
    """PNG renders of the frames under <out>/render: Open3D offscreen (made once, on first use), else BEV images."""

    def __init__(self, out: Path, mode: str, bev_area, min_score: float = 0.3):
        self.out, self.mode, self.bev_area, self.min_score = out / "render", mode, bev_area, min_score
        self.renderer, self.paths, self.used = None, [], mode

    def __call__(self, scene) -> None:
        from pc3d.viz import OffscreenRenderer, render_scene_png

        if scene.pred_scores is not None:  # draw confident boxes only
            keep = np.asarray(scene.pred_scores) >= self.min_score
            scene.pred_boxes, scene.pred_scores = scene.pred_boxes[keep], scene.pred_scores[keep]
            scene.pred_labels = scene.pred_labels[keep]
            if scene.track_ids is not None:
                scene.track_ids = np.asarray(scene.track_ids)[keep]

        if self.renderer is None and self.mode != "bev":
            try:
                self.renderer = OffscreenRenderer()
            except Exception as exc:  # noqa: BLE001 - any renderer failure falls back to BEV images
                print(f"3D renderer unavailable ({exc}); writing BEV images", flush=True)
                self.mode = "bev"
        path, self.used = render_scene_png(scene, self.out / f"{scene.name}.png", self.renderer, self.mode,
                                           self.bev_area, 0.1)
        self.paths.append(path)

    def report(self) -> str:
        """Where the PNGs are: their folder, or the render folder and its sub-folders (one per Waymo segment)."""
        if not self.paths:
            return ""
        folders = sorted({Path(p).parent for p in self.paths})
        where = str(folders[0]) if len(folders) == 1 else (
            f"{self.out} ({len(folders)} folders: {', '.join(str(f.relative_to(self.out)) for f in folders[:3])}"
            f"{', ...' if len(folders) > 3 else ''})")
        return f"renders ({self.used}): {where}, {len(self.paths)} PNGs"
