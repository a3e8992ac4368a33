"""A second, more strongly augmented view of a sample's cloud (the student's, in a mean teacher).

``SecondView(transforms)`` puts ``points2`` = the sample's points after `transforms`, leaving ``points`` (the
teacher's view: whatever the augmentations before it did) as they are. The transforms must keep every point
in its row (rotation, scaling, flips, jitter): row i of points2 is row i of points, so the teacher's per-point
pseudo labels are the student's targets row by row. Place it last among the augmentations.

The sample says so: ``metadata["second_view"]`` is True (`is_second_view`). Transforms that run after it (the
dataset's ``transforms``) keep the rows together: the global ones move both clouds alike, and the point ops that
crop, drop, shuffle or sample rows (pc3d.data.transforms.point_ops) give points2 the rows they give points, as one
of its point-wise keys. A transform that adds or removes rows of one cloud only breaks the correspondence; the mean
teacher refuses a sample whose points2 and points differ in length.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from pc3d.errors import ConfigError

from .compose import Compose

SECOND_VIEW = "second_view"  # the metadata flag: points2 is the points' second view, row by row


def is_second_view(sample: dict) -> bool:
    """True when the sample's points2 is SecondView's view of its points (row i of one is row i of the other)."""
    return "points2" in sample and bool(sample.get("metadata", {}).get(SECOND_VIEW, False))


class SecondView:
    def __init__(self, transforms: Iterable[Any] | None = None):
        self.transforms = Compose(transforms)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        view = self.transforms({"frame_id": sample.get("frame_id"), "points": sample["points"].copy()}, rng)
        if len(view["points"]) != len(sample["points"]):
            raise ConfigError(f"SecondView's transforms must keep every point in its row: {len(sample['points'])} "
                              f"points became {len(view['points'])} (no drops, crops or sampling here)")
        metadata = {**sample.get("metadata", {}), SECOND_VIEW: True}
        return {**sample, "points2": view["points"], "metadata": metadata}
