"""Colours of points (by intensity, height or class) and of boxes (ground truth, predictions per class)."""
from __future__ import annotations

import numpy as np

GT_COLOR = (0.1, 0.9, 0.1)
CLASS_COLORS = np.array([[0.95, 0.25, 0.25], [0.25, 0.55, 1.0], [1.0, 0.75, 0.1], [0.8, 0.3, 0.9],
                         [0.2, 0.9, 0.9], [0.9, 0.5, 0.2]], np.float32)


def _ramp(t: np.ndarray) -> np.ndarray:
    """A perceptual-ish blue -> cyan -> yellow -> red ramp of t in [0, 1]: float32 [N, 3]."""
    stops = np.array([[0.2, 0.3, 0.9], [0.1, 0.8, 0.9], [0.95, 0.9, 0.2], [0.95, 0.3, 0.1]], np.float32)
    x = np.clip(t, 0, 1) * (len(stops) - 1)
    i = np.minimum(x.astype(np.int64), len(stops) - 2)
    f = (x - i)[:, None]
    return (stops[i] * (1 - f) + stops[i + 1] * f).astype(np.float32)


def point_colors(points: np.ndarray, mode: str = "height", labels: np.ndarray | None = None,
                 z_range: tuple[float, float] = (-2.5, 1.5)) -> np.ndarray:
    """float32 [N, 3] in 0..1. mode: 'intensity' (column 3), 'height' (z over z_range) or 'class' (labels)."""
    if mode == "class" and labels is not None:
        return CLASS_COLORS[np.asarray(labels, np.int64) % len(CLASS_COLORS)]
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
