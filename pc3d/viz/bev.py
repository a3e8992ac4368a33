"""Bird's-eye-view images in pure numpy: points as pixels, boxes as outlines with a heading tick (and the way
a box with a velocity moves in a second).
The fallback when no 3D renderer is available, and a useful plot of its own."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pc3d.geometry import boxes_to_corners
from pc3d.viz.colors import box_color, flow_colors, point_colors
from pc3d.viz.scene import flow_arrows, motion_arrows


def _to_pixels(xy: np.ndarray, area: Sequence[float], resolution: float, height: int) -> np.ndarray:
    """LiDAR x (up in the image) / y (left) -> pixel (row, col)."""
    row = height - 1 - (xy[:, 0] - area[0]) / resolution
    col = (area[4] - xy[:, 1]) / resolution  # +y is left in the image
    return np.stack([row, col], 1)


def draw_line(image: np.ndarray, p0: np.ndarray, p1: np.ndarray, color, thickness: int = 1) -> None:
    """Draw the segment p0 -> p1 (pixel row, col floats) into image [H, W, 3] uint8, clipped."""
    n = int(max(abs(p1[0] - p0[0]), abs(p1[1] - p0[1]))) + 2
    t = np.linspace(0, 1, n)[:, None]
    pts = np.round(p0 * (1 - t) + p1 * t).astype(np.int64)
    h, w = image.shape[:2]
    rgb = (np.asarray(color) * 255).astype(np.uint8)
    for dr in range(-(thickness // 2), thickness - thickness // 2):
        for dc in range(-(thickness // 2), thickness - thickness // 2):
            r, c = pts[:, 0] + dr, pts[:, 1] + dc
            ok = (r >= 0) & (r < h) & (c >= 0) & (c < w)
            image[r[ok], c[ok]] = rgb


def draw_boxes(image: np.ndarray, boxes: np.ndarray, area: Sequence[float], resolution: float,
               labels: np.ndarray | None = None, thickness: int = 2, colors: np.ndarray | None = None) -> None:
    """Box outlines (BEV footprint) and a centre-to-front heading tick; ground truth when labels is None,
    coloured by class, or by `colors` [K, 3] (0..1) when given. Boxes [K, 9] with a known velocity (vx, vy) also
    get an arrow from the centre to where it is a second later."""
    if len(boxes) == 0:
        return
    corners = np.asarray(boxes_to_corners(np.asarray(boxes, np.float64)[:, :7]))[:, :4, :2]  # bottom face
    if colors is None:
        colors = [box_color(None if labels is None else int(labels[k])) for k in range(len(boxes))]
    h = image.shape[0]
    for k, c in enumerate(corners):
        px = _to_pixels(c, area, resolution, h)
        color = tuple(float(v) for v in colors[k])
        for i in range(4):
            draw_line(image, px[i], px[(i + 1) % 4], color, thickness)
        centre = _to_pixels(np.asarray(boxes[k:k + 1, :2], np.float64), area, resolution, h)[0]
        heading = boxes[k, 6]
        front = np.array([[boxes[k, 0] + 0.5 * boxes[k, 3] * np.cos(heading),
                           boxes[k, 1] + 0.5 * boxes[k, 3] * np.sin(heading)]])
        draw_line(image, centre, _to_pixels(front, area, resolution, h)[0], color, thickness)
    verts, lines, rows = motion_arrows(boxes)
    px = _to_pixels(verts[:, :2], area, resolution, h)
    for (a, b), k in zip(lines, np.repeat(rows, 3), strict=True):
        draw_line(image, px[a], px[b], tuple(float(v) for v in colors[k]), max(1, thickness // 2))


def render_bev(points: np.ndarray, gt_boxes: np.ndarray | None = None, pred_boxes: np.ndarray | None = None,
               pred_labels: np.ndarray | None = None, area: Sequence[float] = (0.0, -40.0, -3.0, 70.4, 40.0, 1.0),
               resolution: float = 0.1, color_mode: str = "height", point_labels: np.ndarray | None = None,
               palette: np.ndarray | None = None, flow: np.ndarray | None = None,
               pred_colors: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 [H, W, 3] of the area (x_min, y_min, z_min, x_max, y_max, z_max) at `resolution` m / pixel:
    x points up, y left; points coloured by `color_mode` (by their flow when `flow` [N, 3] is given, drawn
    as arrows too); ground truth green, predictions by class (or by `pred_colors` [K, 3], e.g. per track)."""
    area = [float(v) for v in area]
    h = int(round((area[3] - area[0]) / resolution))
    w = int(round((area[4] - area[1]) / resolution))
    image = np.full((h, w, 3), 16, np.uint8)
    pts = np.asarray(points, np.float32)
    if len(pts):
        with np.errstate(invalid="ignore"):  # NaN / inf points: masked out below
            px = np.floor(_to_pixels(pts[:, :2], area, resolution, h) + 0.5).astype(np.int64)
        ok = ((px[:, 0] >= 0) & (px[:, 0] < h) & (px[:, 1] >= 0) & (px[:, 1] < w)
              & np.isfinite(pts[:, :2]).all(1))
        colors = (flow_colors(flow) if flow is not None else
                  point_colors(pts, color_mode, point_labels, (area[2], area[5]), palette))
        order = np.argsort(pts[ok, 2])  # higher points drawn last
        image[px[ok][order, 0], px[ok][order, 1]] = (colors[ok][order] * 255).astype(np.uint8)
    thick = max(1, int(round(0.15 / resolution)))
    if flow is not None and len(pts):
        verts, lines, rows = flow_arrows(pts, flow, max_arrows=1500)
        px = _to_pixels(verts[:, :2], area, resolution, h)
        for (a, b), color in zip(lines, np.repeat(flow_colors(flow)[rows], 3, 0), strict=True):
            draw_line(image, px[a], px[b], color)
    if gt_boxes is not None:
        draw_boxes(image, _box_rows(gt_boxes), area, resolution, None, thick)
    if pred_boxes is not None:
        labels = np.ones(len(pred_boxes), np.int64) if pred_labels is None else pred_labels
        draw_boxes(image, _box_rows(pred_boxes), area, resolution, labels, thick, pred_colors)
    return image


def _box_rows(boxes) -> np.ndarray:
    """float32 [K, 7 (+2)] of boxes given as [K, 7..9] or an empty array of any shape."""
    boxes = np.asarray(boxes, np.float32)
    return boxes.reshape(-1, boxes.shape[-1] if boxes.size else 7)[:, :9]
