"""Waymo Open Dataset detection hook: AP / APH at LEVEL_1 and LEVEL_2 per class (``pc3d.eval.waymo_eval``).

Ground truth comes from ``dataset.annotations(i)`` (the segment's lidar_box rows; no range image read).
Keys: ``Vehicle/L2_APH`` ... and ``mean/L2_APH`` (percent); when the model predicts velocities (boxes [K, 9])
also ``Vehicle/AVE`` ... ``mean/AVE``, nuScenes' average velocity error in m/s (``pc3d.eval.velocity``; lower
is better), against the boxes' ``speed`` columns. ``point_cloud_range``: when a recipe crops
its input (CPU recipes do), only ground truth and predictions whose centres lie inside the x / y range
are scored, and the table says so; null scores everything, as the official evaluation does.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from pc3d.eval.velocity import velocity_error
from pc3d.eval.waymo import LEVELS, waymo_eval

log = logging.getLogger(__name__)


def inside_xy_range(boxes: np.ndarray, point_range: Sequence[float] | None) -> np.ndarray:
    """Which boxes have their centre inside the x / y range of point_range [6] (all when it is None)."""
    if point_range is None:
        return np.ones(len(boxes), bool)
    r = point_range
    return (boxes[:, 0] >= r[0]) & (boxes[:, 0] < r[3]) & (boxes[:, 1] >= r[1]) & (boxes[:, 1] < r[4])


def waymo_table(result: dict, classes: Sequence[str], title: str) -> str:
    """Markdown table of a waymo_eval result (percent)."""
    lines = [title, "", "| class | L1 AP | L1 APH | L2 AP | L2 APH | GT (L1 / L2) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for cls in classes:
        r = result[cls.lower()]
        lines.append(f"| {cls} | {100 * r['LEVEL_1']['AP']:.2f} | {100 * r['LEVEL_1']['APH']:.2f} | "
                     f"{100 * r['LEVEL_2']['AP']:.2f} | {100 * r['LEVEL_2']['APH']:.2f} | "
                     f"{r['LEVEL_1']['num_gt']} / {r['LEVEL_2']['num_gt']} |")
    m = result["mean"]
    lines.append(f"| mean | {100 * m['LEVEL_1']['AP']:.2f} | {100 * m['LEVEL_1']['APH']:.2f} | "
                 f"{100 * m['LEVEL_2']['AP']:.2f} | {100 * m['LEVEL_2']['APH']:.2f} | |")
    return "\n".join(lines)


def velocity_table(result: dict, classes: Sequence[str]) -> str:
    """Markdown table of a velocity_error result."""
    lines = ["Average velocity error (nuScenes AVE, m/s; TPs within 2 m of their ground truth)", "",
             "| class | AVE | TP / GT |", "| --- | --- | --- |"]
    lines += [f"| {cls} | {result[cls.lower()]['AVE']:.3f} | {result[cls.lower()]['num_tp']} / "
              f"{result[cls.lower()]['num_gt']} |" for cls in classes]
    lines.append(f"| mean | {result['mean']['AVE']:.3f} | |")
    return "\n".join(lines)


class WaymoEvaluator:
    """hook(dataset, predictions) -> ``{"<Class>/<L1|L2>_<AP|APH>", "mean/..."}`` in percent; the table in
    ``last_table``. classes: default the dataset's class_names (Vehicle, Pedestrian, Cyclist)."""

    def __init__(self, classes: Sequence[str] | None = None, point_cloud_range: Sequence[float] | None = None):
        self.classes = None if classes is None else tuple(classes)
        self.point_cloud_range = None if point_cloud_range is None else [float(v) for v in point_cloud_range]
        self.last_table = ""

    def __call__(self, dataset, predictions: list[dict]) -> dict:
        class_names = list(dataset.class_names)
        classes = self.classes or tuple(class_names)
        gts, dts = [], []
        for i, pred in enumerate(predictions):
            annos = dataset.annotations(i)["annos"]
            keep = inside_xy_range(annos["box"], self.point_cloud_range)
            gts.append({"boxes": annos["box"][keep], "types": annos["name"][keep],
                        "num_points": annos["num_points"][keep], "difficulty": annos["difficulty"][keep]})
            boxes = np.asarray(pred["boxes"], np.float64)
            boxes = boxes if boxes.ndim == 2 else boxes.reshape(0, 7)
            keep = inside_xy_range(boxes, self.point_cloud_range)
            names = np.asarray(class_names)[np.asarray(pred["labels"], np.int64) - 1]
            dts.append({"boxes": boxes[keep], "types": np.char.lower(names[keep]),
                        "scores": np.asarray(pred["scores"])[keep]})
        lower = tuple(c.lower() for c in classes)
        result = waymo_eval(gts, dts, lower)  # waymo_eval compares lower-case names
        where = ("all boxes" if self.point_cloud_range is None else
                 f"boxes with centres inside x, y range {self.point_cloud_range[0]:g}..{self.point_cloud_range[3]:g}, "
                 f"{self.point_cloud_range[1]:g}..{self.point_cloud_range[4]:g} m")
        self.last_table = waymo_table(result, classes, f"Waymo AP / APH (%) over {len(predictions)} frames, {where}")
        velocity = None
        if any(len(d["boxes"]) for d in dts) and all(d["boxes"].shape[1] >= 9 for d in dts if len(d["boxes"])):
            velocity = velocity_error([g | {"types": np.char.lower(g["types"])} for g in gts], dts, lower)
            self.last_table += "\n\n" + velocity_table(velocity, classes)
        log.info("%s", self.last_table)
        out = {}
        for name in (*classes, "mean"):
            r = result[name.lower() if name != "mean" else "mean"]
            for level, short in zip(LEVELS, ("L1", "L2"), strict=True):
                for metric in ("AP", "APH"):
                    out[f"{name}/{short}_{metric}"] = 100 * r[level][metric]
            if velocity is not None:
                out[f"{name}/AVE"] = velocity[name.lower() if name != "mean" else "mean"]["AVE"]
        return out
