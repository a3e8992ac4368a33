"""KITTI object label files (label_2 text format) <-> annotation dicts of numpy arrays.

One line per object: ``type truncated occluded alpha left top right bottom h w l x y z rotation_y
[score]`` (camera frame, bottom centre, metres, radians). The dict keeps the devkit python port's
layout, which ``pc3d.eval.kitti_eval`` consumes:

- ``name`` str [M]; ``truncated`` float64 [M]; ``occluded`` int64 [M]; ``alpha`` float64 [M]
- ``bbox`` float64 [M, 4]: left, top, right, bottom (pixels, image 2)
- ``dimensions`` float64 [M, 3]: **l, h, w** (reordered from the file's h, w, l, as the port does)
- ``location`` float64 [M, 3]: x, y, z of the bottom centre in the rectified camera frame
- ``rotation_y`` float64 [M]; ``score`` float64 [M] only when the file has the 16th column
"""
from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np

from pc3d.errors import DataFormatError
from pc3d.geometry import KittiCalib, alpha_from_rotation_y, boxes_lidar_to_camera, boxes_to_image_2d

ANNO_KEYS = ("name", "truncated", "occluded", "alpha", "bbox", "dimensions", "location", "rotation_y")


def empty_anno(with_score: bool = False) -> dict:
    """An annotation dict with no objects (the arrays have the documented shapes, M = 0)."""
    anno = {
        "name": np.zeros(0, dtype="<U16"),
        "truncated": np.zeros(0),
        "occluded": np.zeros(0, np.int64),
        "alpha": np.zeros(0),
        "bbox": np.zeros((0, 4)),
        "dimensions": np.zeros((0, 3)),
        "location": np.zeros((0, 3)),
        "rotation_y": np.zeros(0),
    }
    if with_score:
        anno["score"] = np.zeros(0)
    return anno


def read_kitti_label(path: str | PathLike) -> dict:
    """Parse one KITTI label_2 file (15 columns, or 16 with a detection score) into a dict."""
    path = Path(path)
    try:
        lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    except OSError as exc:
        raise DataFormatError(path, f"cannot read the label file ({exc})") from exc
    if not lines:
        return empty_anno()
    widths = {len(ln) for ln in lines}
    if len(widths) != 1 or widths.pop() not in (15, 16):
        raise DataFormatError(path, "every line needs 15 columns (16 with a score), got "
                                    f"{sorted({len(ln) for ln in lines})}")
    try:
        values = np.array([[float(v) for v in ln[1:]] for ln in lines], np.float64)
    except ValueError as exc:
        raise DataFormatError(path, f"non-numeric field ({exc})") from exc
    anno = {
        "name": np.array([ln[0] for ln in lines]),
        "truncated": values[:, 0],
        "occluded": values[:, 1].astype(np.int64),
        "alpha": values[:, 2],
        "bbox": values[:, 3:7],
        "dimensions": values[:, [9, 7, 8]],  # file h, w, l -> l, h, w
        "location": values[:, 10:13],
        "rotation_y": values[:, 13],
    }
    if values.shape[1] == 15:
        anno["score"] = values[:, 14]
    return anno


def write_kitti_label(path: str | PathLike, anno: dict) -> None:
    """Write an annotation dict (dimensions l, h, w) as a KITTI label_2 file; a score column if present."""
    path = Path(path)
    check_anno(anno, str(path), need_score=False)
    n = len(anno["name"])
    trunc = np.asarray(anno["truncated"], np.float64)
    occ = np.asarray(anno["occluded"]).astype(np.int64)
    alpha = np.asarray(anno["alpha"], np.float64)
    bbox = np.asarray(anno["bbox"], np.float64).reshape(n, 4)
    dims = np.asarray(anno["dimensions"], np.float64).reshape(n, 3)
    loc = np.asarray(anno["location"], np.float64).reshape(n, 3)
    ry = np.asarray(anno["rotation_y"], np.float64)
    score = anno.get("score")
    rows = []
    for i in range(n):
        row = (f"{anno['name'][i]} {trunc[i]:.2f} {occ[i]:d} {alpha[i]:.4f} "
               f"{bbox[i, 0]:.4f} {bbox[i, 1]:.4f} {bbox[i, 2]:.4f} {bbox[i, 3]:.4f} "
               f"{dims[i, 1]:.4f} {dims[i, 2]:.4f} {dims[i, 0]:.4f} "
               f"{loc[i, 0]:.4f} {loc[i, 1]:.4f} {loc[i, 2]:.4f} {ry[i]:.4f}")
        if score is not None:
            row += f" {float(score[i]):.6f}"
        rows.append(row)
    path.write_text("".join(r + "\n" for r in rows))


def check_anno(anno: dict, where: str, need_score: bool) -> None:
    """Raise DataFormatError naming `where` when a key is missing or array lengths disagree."""
    # an empty file, as read, has no score column: a frame without detections, which needs none
    keys = ANNO_KEYS + (("score",) if need_score and len(anno.get("name", ())) else ())
    missing = [k for k in keys if k not in anno]
    if missing:
        raise DataFormatError(where, f"annotation lacks {missing}")
    n = len(anno["name"])
    shapes = {"bbox": 4, "dimensions": 3, "location": 3}
    for k in keys:
        arr = np.asarray(anno[k])
        want = (n, shapes[k]) if k in shapes else (n,)
        if arr.shape != want and not (n == 0 and arr.size == 0):
            raise DataFormatError(where, f"'{k}' has shape {arr.shape}, expected {want} for {n} objects")


def to_kitti_anno(prediction: dict, calib: KittiCalib, image_shape: tuple[int, int] | None,
                  class_names: Sequence[str]) -> dict:
    """One frame's prediction -> a KITTI annotation dict (pc3d.eval.kitti_io layout, with score).

    Boxes whose centre is behind the camera or whose 2D box falls outside the image are dropped (they
    cannot be KITTI labels), as OpenPCDet does."""
    boxes = np.asarray(prediction["boxes"], np.float32)
    boxes = boxes.reshape(-1, boxes.shape[-1] if boxes.size else 7)[:, :7]  # a velocity (vx, vy) has no KITTI field
    anno = empty_anno(with_score=True)
    if len(boxes) == 0:
        return anno
    cam = np.asarray(boxes_lidar_to_camera(boxes, calib), np.float64)
    keep = cam[:, 2] > 0.1
    bbox = np.asarray(boxes_to_image_2d(boxes[keep], calib), np.float64) if keep.any() else np.zeros((0, 4))
    full = np.zeros((len(boxes), 4))
    full[keep] = bbox
    if image_shape is not None:
        h, w = image_shape[:2]
        keep &= (full[:, 0] < w) & (full[:, 1] < h) & (full[:, 2] >= 0) & (full[:, 3] >= 0)
        full[:, 0::2] = np.clip(full[:, 0::2], 0, w - 1)
        full[:, 1::2] = np.clip(full[:, 1::2], 0, h - 1)
    cam, full = cam[keep], full[keep]
    labels = np.asarray(prediction["labels"], np.int64)[keep]
    return {"name": np.asarray([class_names[k - 1] for k in labels], dtype="<U16"),
            "truncated": np.zeros(len(cam)), "occluded": np.zeros(len(cam), np.int64),
            "alpha": np.asarray(alpha_from_rotation_y(cam[:, 6], cam[:, 0], cam[:, 2]), np.float64),
            "bbox": full, "dimensions": cam[:, [5, 3, 4]],  # l, h, w
            "location": cam[:, :3], "rotation_y": cam[:, 6],
            "score": np.asarray(prediction["scores"], np.float64)[keep]}
