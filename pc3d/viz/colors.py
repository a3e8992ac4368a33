"""Colours of points (by intensity, height or class), of boxes (ground truth, predictions per class) and of
scene-flow vectors (direction as hue, speed as brightness: the optical-flow colour wheel seen from above).

Class palettes: SemanticKITTI's from its devkit config (`color_map` of raw ids, BGR, through
`learning_map_inv`), ScanNet's 20 benchmark colours, and a generated one for any other label set.
"""
from __future__ import annotations

import numpy as np

GT_COLOR = (0.1, 0.9, 0.1)
CLASS_COLORS = np.array([[0.95, 0.25, 0.25], [0.25, 0.55, 1.0], [1.0, 0.75, 0.1], [0.8, 0.3, 0.9],
                         [0.2, 0.9, 0.9], [0.9, 0.5, 0.2]], np.float32)


# the ScanNet benchmark's colours of its 20 classes (train ids 0..19: wall, floor, ... otherfurniture), RGB
SCANNET20_COLORS = np.array([
    [174, 199, 232], [152, 223, 138], [31, 119, 180], [255, 187, 120], [188, 189, 34], [140, 86, 75],
    [255, 152, 150], [214, 39, 40], [197, 176, 213], [148, 103, 189], [196, 156, 148], [23, 190, 207],
    [247, 182, 210], [219, 219, 141], [255, 127, 14], [158, 218, 229], [44, 160, 44], [112, 128, 144],
    [227, 119, 194], [82, 84, 163]], np.float32) / 255.0


def generated_palette(num_classes: int) -> np.ndarray:
    """float32 [num_classes, 3]: well-separated hues (golden-ratio steps), two brightness levels."""
    i = np.arange(num_classes)
    hue = (i * 0.618033988749895) % 1.0
    value = np.where(i % 2 == 0, 0.95, 0.7)
    k = (np.array([5.0, 3.0, 1.0])[None] + hue[:, None] * 6.0) % 6.0  # HSV -> RGB at saturation 0.75
    rgb = value[:, None] * (1.0 - 0.75 * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))
    return rgb.astype(np.float32)


# RGB of the MOS train ids 0 unlabelled, 1 static, 2 moving (the devkit colours static points black, unseen on a
# black background)
MOS_PALETTE = np.array([[0.35, 0.35, 0.35], [0.55, 0.7, 0.95], [1.0, 0.15, 0.1]], np.float32)


def semantickitti_palette(learning_map_inv: dict, color_map: dict) -> np.ndarray:
    """float32 [num train ids, 3] RGB of SemanticKITTI train ids from the devkit's BGR `color_map`."""
    n = max(int(k) for k in learning_map_inv) + 1
    out = np.zeros((n, 3), np.float32)
    for train_id, raw in learning_map_inv.items():
        out[int(train_id)] = np.asarray(color_map[int(raw)], np.float32)[::-1] / 255.0
    return out


def _ramp(t: np.ndarray) -> np.ndarray:
    """A perceptual-ish blue -> cyan -> yellow -> red ramp of t in [0, 1] (NaN: the low end): float32 [N, 3]."""
    stops = np.array([[0.2, 0.3, 0.9], [0.1, 0.8, 0.9], [0.95, 0.9, 0.2], [0.95, 0.3, 0.1]], np.float32)
    x = np.clip(np.nan_to_num(t, nan=0.0), 0, 1) * (len(stops) - 1)
    i = np.minimum(x.astype(np.int64), len(stops) - 2)
    f = (x - i)[:, None]
    return (stops[i] * (1 - f) + stops[i + 1] * f).astype(np.float32)


def point_colors(points: np.ndarray, mode: str = "height", labels: np.ndarray | None = None,
                 z_range: tuple[float, float] = (-2.5, 1.5), palette: np.ndarray | None = None) -> np.ndarray:
    """float32 [N, 3] in 0..1. mode: 'intensity' (column 3), 'rgb' (columns 3-5, an RGB-D scene's colours, in
    0..1 or, when any exceeds 1, 0..255 as ScanNet .bin files keep them; height without them), 'height' (z over
    z_range) or 'class' (labels through `palette` [K, 3], by default a generated one; labels outside 0..K-1 are
    grey)."""
    if mode == "class" and labels is not None:
        labels = np.asarray(labels, np.int64)
        if palette is None:
            palette = generated_palette(max(int(labels.max(initial=0)) + 1, 1))
        palette = np.asarray(palette, np.float32)
        known = (labels >= 0) & (labels < len(palette))
        out = np.full((len(labels), 3), 0.35, np.float32)
        out[known] = palette[labels[known]]
        return out
    if mode == "rgb" and points.shape[1] >= 6:
        rgb = points[:, 3:6].astype(np.float32)
        return np.clip(rgb / 255.0 if rgb.max(initial=0.0) > 1.0 else rgb, 0.0, 1.0)
    if mode == "intensity" and points.shape[1] > 3:
        v = points[:, 3].astype(np.float32)
        hi = float(np.percentile(v, 99)) if len(v) else 1.0
        return _ramp(np.sqrt(v / max(hi, 1e-6)))
    lo, hi = z_range
    return _ramp((points[:, 2] - lo) / (hi - lo))


def box_color(label: int | None) -> tuple[float, float, float]:
    """Ground truth (label None) green; predictions by class id 1..K."""
    if label is None:
        return GT_COLOR
    return tuple(float(c) for c in CLASS_COLORS[(int(label) - 1) % len(CLASS_COLORS)])


def track_colors(track_ids: np.ndarray) -> np.ndarray:
    """float32 [K, 3] in 0..1, one colour per track id that stays the same over a sequence: hues 0.618 turns
    apart (the golden ratio), so ids close in number differ in colour."""
    hue = (np.asarray(track_ids, np.float64).reshape(-1) * 0.6180339887) % 1.0
    k = (np.array([5.0, 3.0, 1.0])[None] + hue[:, None] * 6.0) % 6.0  # HSV -> RGB, saturation 0.8, value 1
    return (1.0 - 0.8 * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)).astype(np.float32)


def flow_colors(flow: np.ndarray, max_norm: float | None = None) -> np.ndarray:
    """float32 [N, 3] in 0..1 of flow vectors [N, 3]: hue = direction in the x-y plane (+x red, +y
    yellow-green, -x cyan, -y violet), saturation = speed / max_norm (default: the 99th percentile), so a
    still point is white-grey and the fastest ones fully coloured. NaN rows are grey."""
    flow = np.asarray(flow, np.float32).reshape(-1, 3)
    finite = np.isfinite(flow).all(1)
    speed = np.linalg.norm(np.where(finite[:, None], flow, 0), axis=1)
    if max_norm is None:
        max_norm = float(np.percentile(speed[finite], 99)) if finite.any() else 1.0
    hue = (np.arctan2(flow[:, 1], flow[:, 0]) / (2 * np.pi)) % 1.0
    sat = np.clip(speed / max(max_norm, 1e-6), 0.0, 1.0)
    k = (np.array([5.0, 3.0, 1.0])[None] + np.nan_to_num(hue)[:, None] * 6.0) % 6.0  # HSV -> RGB, value 0.95
    rgb = 0.95 * (1.0 - sat[:, None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))
    rgb[~finite] = 0.35
    return rgb.astype(np.float32)
