"""Composition of transforms: ``Compose([...])(sample, rng)``, items given as objects or hydra ``_target_`` dicts.

A transform is any callable ``(sample: dict, rng: numpy.random.Generator) -> dict`` that keeps the
batch contract (pc3d.data.batch): point-wise keys stay aligned with ``points``, box-wise keys with
``gt_boxes``. All randomness comes from `rng`, which the dataset seeds per sample from
(seed, epoch, index), so a run is reproducible whatever the number of DataLoader workers.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

Transform = Callable[[dict, np.random.Generator], dict]


def instantiate(item: Any) -> Transform:
    """A transform from an object or a ``{_target_: ..., ...}`` mapping (hydra's instantiate)."""
    if isinstance(item, Mapping) or (hasattr(item, "keys") and "_target_" in item):
        from hydra.utils import instantiate as hydra_instantiate

        return hydra_instantiate(item)
    if not callable(item):
        from pc3d.errors import ConfigError

        raise ConfigError(f"a transform must be callable or a _target_ mapping, got {item!r}")
    return item


class Compose:
    """Apply transforms in order; an empty or None list is the identity."""

    def __init__(self, transforms: Iterable[Any] | None = None):
        self.transforms = [instantiate(t) for t in (transforms or [])]

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        for transform in self.transforms:
            sample = transform(sample, rng)
        return sample

    def __len__(self) -> int:
        return len(self.transforms)

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"
