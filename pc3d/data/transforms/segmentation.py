"""Segmentation-only augmentation: coordinate jitter, colour jitter and auto-contrast.

Rotation, scaling and flips for segmentation are the global transforms (pc3d.data.transforms.global_ops);
per-point labels need no change under them, so they stay aligned. Both jitters act on every cloud.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pc3d.errors import ConfigError

from ..batch import clouds_of


class PointJitter:
    """Add Gaussian noise (std `sigma`, clipped to +-`clip` metres) to each point's x, y, z."""

    def __init__(self, sigma: float = 0.01, clip: float = 0.05):
        if sigma < 0 or clip <= 0:
            raise ConfigError(f"PointJitter: sigma must be >= 0 and clip > 0, got {sigma!r}, {clip!r}")
        self.sigma, self.clip = float(sigma), float(clip)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        for cloud in clouds_of(sample):
            pts = sample[cloud].copy()
            noise = np.clip(rng.normal(0.0, self.sigma, (len(pts), 3)), -self.clip, self.clip)
            pts[:, :3] += noise.astype(np.float32)
            sample[cloud] = pts
        return sample


def _colour_columns(columns: Sequence[int], name: str) -> np.ndarray:
    columns = np.asarray(columns, np.int64).reshape(-1)
    if not len(columns) or (columns < 3).any():
        raise ConfigError(f"{name}: columns must be feature columns (>= 3), got {columns.tolist()}")
    return columns


class ColorJitter:
    """Colour jitter on the feature columns `columns` (indices into points, e.g. [3, 4, 5] for r, g, b
    in 0..1): a random brightness shift (uniform +-`brightness`, one for the scene, or with `per_channel` one
    per column: Pointcept's ChromaticTranslation, whose ratio is `brightness`) then per-point Gaussian noise
    (`std`: Pointcept's ChromaticJitter), clipped back to [0, 1]. Applied with probability `prob`."""

    def __init__(self, columns: Sequence[int] = (3, 4, 5), brightness: float = 0.1, std: float = 0.02,
                 prob: float = 0.95, per_channel: bool = False):
        self.columns = _colour_columns(columns, "ColorJitter")
        if brightness < 0 or std < 0 or not 0 <= prob <= 1:
            raise ConfigError("ColorJitter: brightness and std must be >= 0, prob in [0, 1]; got "
                              f"{brightness!r}, {std!r}, {prob!r}")
        self.brightness, self.std, self.prob = float(brightness), float(std), float(prob)
        self.per_channel = bool(per_channel)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        if rng.random() >= self.prob:
            return sample
        shift = rng.uniform(-self.brightness, self.brightness, len(self.columns) if self.per_channel else None)
        for cloud in clouds_of(sample):
            pts = sample[cloud].copy()
            colour = pts[:, self.columns] + shift
            colour += rng.normal(0.0, self.std, colour.shape)
            pts[:, self.columns] = np.clip(colour, 0.0, 1.0)
            sample[cloud] = pts
        return sample


class ChromaticAutoContrast:
    """Stretch the colour columns to [0, 1] over the scene (each column from its own min and max over every
    cloud's points) and blend: colour = (1 - b) colour + b stretched, b uniform in [0, 1) or `blend`. Applied with
    probability `prob` (Pointcept's ChromaticAutoContrast, p 0.2); a column without spread is left as it is."""

    def __init__(self, columns: Sequence[int] = (3, 4, 5), prob: float = 0.2, blend: float | None = None):
        self.columns = _colour_columns(columns, "ChromaticAutoContrast")
        if not 0 <= prob <= 1 or (blend is not None and not 0 <= blend <= 1):
            raise ConfigError(f"ChromaticAutoContrast: prob and blend must be in [0, 1], got {prob!r}, {blend!r}")
        self.prob, self.blend = float(prob), None if blend is None else float(blend)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        if rng.random() >= self.prob:
            return sample
        clouds = clouds_of(sample)
        colour = np.concatenate([sample[cloud][:, self.columns] for cloud in clouds])
        if not len(colour):
            return sample
        lo, hi = colour.min(0), colour.max(0)
        spread = hi - lo
        scale = np.divide(1.0, spread, out=np.zeros_like(spread), where=spread > 0)
        blend = rng.random() if self.blend is None else self.blend
        for cloud in clouds:
            pts = sample[cloud].copy()
            c = pts[:, self.columns]
            stretched = np.where(spread > 0, (c - lo) * scale, c)
            pts[:, self.columns] = ((1.0 - blend) * c + blend * stretched).astype(pts.dtype)
            sample[cloud] = pts
        return sample
