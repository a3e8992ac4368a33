"""Segmentation-only augmentation: coordinate jitter and colour jitter.

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


class ColorJitter:
    """Colour jitter on the feature columns `columns` (indices into points, e.g. [3, 4, 5] for r, g, b
    in 0..1): a random brightness shift (uniform +-`brightness`, one for the scene) then per-point
    Gaussian noise (`std`), clipped back to [0, 1]. Applied with probability `prob`."""

    def __init__(self, columns: Sequence[int] = (3, 4, 5), brightness: float = 0.1, std: float = 0.02,
                 prob: float = 0.95):
        self.columns = np.asarray(columns, np.int64)
        if (self.columns < 3).any() or brightness < 0 or std < 0 or not 0 <= prob <= 1:
            raise ConfigError("ColorJitter: columns must be feature columns (>= 3), brightness and std >= 0, "
                              f"prob in [0, 1]; got {columns!r}, {brightness!r}, {std!r}, {prob!r}")
        self.brightness, self.std, self.prob = float(brightness), float(std), float(prob)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        if rng.random() >= self.prob:
            return sample
        shift = rng.uniform(-self.brightness, self.brightness)
        for cloud in clouds_of(sample):
            pts = sample[cloud].copy()
            colour = pts[:, self.columns] + shift
            colour += rng.normal(0.0, self.std, colour.shape)
            pts[:, self.columns] = np.clip(colour, 0.0, 1.0)
            sample[cloud] = pts
        return sample
