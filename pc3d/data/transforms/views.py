"""A second, more strongly augmented view of a sample's cloud (the student's, in a mean teacher).

``SecondView(transforms)`` puts ``points2`` = the sample's points after `transforms`, leaving ``points`` (the
teacher's view: whatever the augmentations before it did) as they are. The transforms must keep every point
in its row (rotation, scaling, flips, jitter): row i of points2 is row i of points, so the teacher's per-point
pseudo labels are the student's targets row by row. Place it last among the augmentations.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from pc3d.errors import ConfigError

from .compose import Compose


class SecondView:
    def __init__(self, transforms: Iterable[Any] | None = None):
        self.transforms = Compose(transforms)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        view = self.transforms({"frame_id": sample.get("frame_id"), "points": sample["points"].copy()}, rng)
        if len(view["points"]) != len(sample["points"]):
            raise ConfigError(f"SecondView's transforms must keep every point in its row: {len(sample['points'])} "
                              f"points became {len(view['points'])} (no drops, crops or sampling here)")
        return {**sample, "points2": view["points"]}
