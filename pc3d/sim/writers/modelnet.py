"""ModelNet40 in PointNet++'s resampled layout (modelnet40_normal_resampled.zip), as PointNet++ and
E-3DSNN read it:

    modelnet40_normal_resampled/<class>/<class>_NNNN.txt     10,000 lines "x,y,z,nx,ny,nz" (6 decimals),
                                                             NNNN counts from 0001 within the class
    modelnet40_normal_resampled/modelnet40_shape_names.txt   one class per line, in class-id order
    modelnet40_normal_resampled/modelnet40_{train,test}.txt  one shape id per line ("chair_0001")
    modelnet40_normal_resampled/modelnet10_*.txt             the same lists for the classes that are also
                                                             ModelNet10's (bed, chair, monitor, sofa, table)

Axes follow ModelNet: y up (pc3d.sim.shapes builds shapes z up; a point (x, y, z) is written as
(x, z, -y)). Each shape is centred on its bounding box and scaled so its farthest point is at
distance 1, as the real files are, roughly, normalised. The classes are pc3d.sim.shapes.SHAPE_NAMES
(a subset of ModelNet40's names), alphabetical as in the real names file.

settings.frames is the total number of shapes, spread over the classes as evenly as possible (the
first classes get one more). Of a class's n shapes the first n - max(1, round(0.2 n)) are train (all
of them when n = 1), the rest test, numbered in that order (train ids first, as in ModelNet). Shape k
of class c is drawn from default_rng([seed, c, k]) alone, so it is the same whatever frames is.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..shapes import SHAPE_NAMES, sample_shape
from .settings import WriterSettings

FOLDER = "modelnet40_normal_resampled"
MODELNET10 = ("bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet")
POINTS_PER_SHAPE = 10_000
Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])  # rows: ModelNet x, y, z


def shape_counts(total: int, classes: int) -> list[int]:
    """Shapes per class: `total` spread as evenly as possible, the first classes getting one more."""
    return [total // classes + (c < total % classes) for c in range(classes)]


def train_count(n: int) -> int:
    """How many of a class's n shapes are train: about 80 %, leaving at least one for test when n > 1."""
    return n if n < 2 else n - max(1, round(0.2 * n))


def simulated_shape(seed: int, class_index: int, instance: int, n: int = POINTS_PER_SHAPE) -> np.ndarray:
    """float64 [n, 6] x, y, z, nx, ny, nz of one shape in ModelNet's axes (y up), inside the unit sphere."""
    points, normals = sample_shape(SHAPE_NAMES[class_index], n, np.random.default_rng([seed, class_index, instance]))
    points = points - (points.min(0) + points.max(0)) / 2
    points /= np.linalg.norm(points, axis=1).max()
    return np.concatenate([points @ Z_UP_TO_Y_UP.T, normals @ Z_UP_TO_Y_UP.T], 1)


def shape_text(shape: np.ndarray) -> str:
    """The lines of a resampled shape file: "x,y,z,nx,ny,nz" with 6 decimals per row of shape [N, 6]."""
    return ("%.6f,%.6f,%.6f,%.6f,%.6f,%.6f\n" * len(shape)) % tuple(shape.ravel())


def write_modelnet40(settings: WriterSettings) -> None:
    """settings.frames shapes under settings.out/modelnet40_normal_resampled, with the names and split lists."""
    root = Path(settings.out) / FOLDER
    root.mkdir(parents=True, exist_ok=True)
    train, test, done = [], [], 0
    for c, (name, count) in enumerate(zip(SHAPE_NAMES, shape_counts(settings.frames, len(SHAPE_NAMES)), strict=True)):
        (root / name).mkdir(exist_ok=True)
        for k in range(count):
            shape_id = f"{name}_{k + 1:04d}"
            (root / name / f"{shape_id}.txt").write_text(shape_text(simulated_shape(settings.seed, c, k)))
            (train if k < train_count(count) else test).append((name, shape_id))
            done += 1
            settings.tick(done)
    ten = [name for name in SHAPE_NAMES if name in MODELNET10]
    for categories, names in ((40, SHAPE_NAMES), (10, ten)):
        (root / f"modelnet{categories}_shape_names.txt").write_text("".join(f"{name}\n" for name in names))
        for split, ids in (("train", train), ("test", test)):
            (root / f"modelnet{categories}_{split}.txt").write_text("".join(f"{i}\n" for c, i in ids if c in names))
