"""CenterPoint targets: Gaussian heat maps around box centres (CenterNet's radius rule) and the
regression targets at each centre's cell."""
from __future__ import annotations

import math

import numpy as np

from pc3d.errors import ConfigError
from pc3d.geometry import CenterPointCoder


def gaussian_radius(height: float, width: float, min_overlap: float = 0.1) -> float:
    """CenterNet's radius (in cells) within which a shifted box of size height x width keeps min_overlap IoU."""
    a1, b1, c1 = 1, height + width, width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * a1 * c1)) / 2
    a2, b2, c2 = 4, 2 * (height + width), (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2 ** 2 - 4 * a2 * c2)) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (height + width), (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def draw_gaussian(heatmap: np.ndarray, cx: int, cy: int, radius: int) -> None:
    """Max-merge a Gaussian of sigma (2 radius + 1) / 6 centred on cell (cx, cy) into heatmap [H, W]."""
    sigma = (2 * radius + 1) / 6
    ys, xs = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    g = np.exp(-(xs * xs + ys * ys) / (2 * sigma * sigma))
    h, w = heatmap.shape
    left, right = min(cx, radius), min(w - cx, radius + 1)
    top, bottom = min(cy, radius), min(h - cy, radius + 1)
    if left + right <= 0 or top + bottom <= 0:
        return
    patch = heatmap[cy - top:cy + bottom, cx - left:cx + right]
    np.maximum(patch, g[radius - top:radius + bottom, radius - left:radius + right], out=patch)


def center_targets(gt_boxes: np.ndarray, gt_classes: np.ndarray, num_classes: int, map_size: tuple[int, int],
                   coder: CenterPointCoder, max_objs: int = 500, min_overlap: float = 0.1, min_radius: int = 2,
                   velocity: bool = False) -> dict[str, np.ndarray]:
    """Targets of one frame and one task.

    gt_boxes [M, 7 (+2)]; gt_classes [M] in 0..num_classes-1 (the task's own class index); map_size (H, W).
    Returns heatmap float32 [num_classes, H, W], index int64 [max_objs] (iy * W + ix), mask bool
    [max_objs], targets float32 [max_objs, 8] (CenterPointCoder.encode; [max_objs, 10] with `velocity`:
    vx, vy last, NaN where a box's velocity is unknown) and boxes float32 [max_objs, 7].
    Boxes whose centre falls outside the map are skipped.
    """
    if velocity and gt_boxes.shape[1] < 9:
        raise ConfigError(f"velocity targets need boxes [M, 9] (x, y, z, dx, dy, dz, heading, vx, vy), got "
                          f"{gt_boxes.shape[1]} columns: the dataset has no box velocities")
    width = 9 if velocity else 7
    h, w = map_size
    heatmap = np.zeros((num_classes, h, w), np.float32)
    index = np.zeros(max_objs, np.int64)
    mask = np.zeros(max_objs, bool)
    targets = np.zeros((max_objs, width + 1), np.float32)
    boxes = np.zeros((max_objs, 7), np.float32)
    if len(gt_boxes) == 0:
        return {"heatmap": heatmap, "index": index, "mask": mask, "targets": targets, "boxes": boxes}
    cells = coder.cell_index(gt_boxes[:, :7])
    encoded = coder.encode(gt_boxes[:, :width].astype(np.float32), cells)
    n = 0
    for k in range(len(gt_boxes)):
        cx, cy = int(cells[k, 0]), int(cells[k, 1])
        if not (0 <= cx < w and 0 <= cy < h) or n >= max_objs:
            continue
        size_x, size_y = gt_boxes[k, 3] / coder.cell[0], gt_boxes[k, 4] / coder.cell[1]
        radius = max(min_radius, int(gaussian_radius(size_y, size_x, min_overlap)))
        draw_gaussian(heatmap[int(gt_classes[k])], cx, cy, radius)
        index[n], mask[n] = cy * w + cx, True
        targets[n], boxes[n] = encoded[k], gt_boxes[k, :7]
        n += 1
    return {"heatmap": heatmap, "index": index, "mask": mask, "targets": targets, "boxes": boxes}
