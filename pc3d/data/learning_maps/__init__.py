"""The SemanticKITTI devkit's learning maps (raw label id <-> train id), shipped as package data.

``semantic-kitti.yaml`` (semantic segmentation: 0 unlabelled .. 19) and ``semantic-kitti-mos.yaml``
(moving-object segmentation: 0 unlabelled, 1 static, 2 moving) sit beside this module, so they are
found in an installed wheel as in a checkout. This module imports no other pc3d module: the
dataset (pc3d.data.semantickitti) and the submission writer (pc3d.eval.seg_writer) both read it.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml

from pc3d.errors import ConfigError

LEARNING_MAPS = Path(__file__).resolve().parent
MODES = {"semantic": "semantic-kitti.yaml", "mos": "semantic-kitti-mos.yaml"}


@lru_cache(maxsize=8)
def load_learning_map(path: str) -> dict:
    """The devkit YAML (labels, learning_map, learning_map_inv, learning_ignore, split) with int keys."""
    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read the learning map {path}: {error}") from None
    for key in ("labels", "learning_map", "learning_map_inv"):
        if key not in config:
            raise ConfigError(f"{path}: missing {key!r}")
    return config


def lookup_table(learning_map: dict[int, int]) -> np.ndarray:
    """int64 [max raw id + 1]: train id of every raw id, -1 for ids the map does not know."""
    lut = np.full(max(learning_map) + 1, -1, np.int64)
    for raw, train in learning_map.items():
        lut[int(raw)] = int(train)
    return lut
