"""ModelNet40 shape classification, read from PointNet++'s resampled layout (modelnet40_normal_resampled.zip):

    modelnet40_normal_resampled/modelnet40_shape_names.txt   class names, one per line, in class-id order
    modelnet40_normal_resampled/modelnet40_{train,test}.txt  shape ids, one per line ("night_stand_0001")
    modelnet40_normal_resampled/<class>/<shape id>.txt       one point per line, "x,y,z,nx,ny,nz" (10,000 lines)
    modelnet40_normal_resampled/modelnet10_shape_names.txt   ModelNet10: its 10 classes, the same shape files
    modelnet40_normal_resampled/modelnet10_{train,test}.txt  (``categories=10``, PointNet++'s num_category)

`root` is the folder holding modelnet40_normal_resampled/ (or that folder itself). A shape id's class is
the id without its last "_NNNN" (class names hold underscores: night_stand, flower_pot).

ModelNet is y up; the loader turns points and normals to pc3d's z up at the edge, (x, y, z) -> (x, -z, y)
(a rotation: normals stay outward), so rotation augmentation is about z as everywhere in pc3d. As
PointNet++'s ModelNetDataLoader does, the first `num_points` rows are kept (the resampled files are in
random order) and x, y, z are normalised into the unit sphere (centroid subtracted, divided by the
largest norm: ``pc_normalize``) before any augmentation. numpy's C text parser (np.loadtxt, numpy >= 1.23)
reads a 10,000-line file in about 5 ms, so no cache is kept.
"""
from __future__ import annotations

import warnings
from os import PathLike
from pathlib import Path

import numpy as np

from pc3d.errors import ConfigError, DataFormatError

from .dataset import PointCloudDataset
from .io import check_finite, numbered_lines, read_ids

FOLDER = "modelnet40_normal_resampled"
SPLITS = ("train", "test")
CATEGORIES = (40, 10)


def list_file(categories: int, kind: str) -> str:
    """The name of a list file of the layout: kind "shape_names", "train" or "test" of ModelNet40 or ModelNet10."""
    return f"modelnet{categories}_{kind}.txt"


def read_shape(path: str | PathLike) -> np.ndarray:
    """float32 [N, 6] x, y, z, nx, ny, nz of a resampled shape file, as stored (y up).

    DataFormatError naming the file when it is missing, empty, not 6 comma-separated numbers per line, or
    holds NaN / inf."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "file does not exist")
    try:
        with warnings.catch_warnings():  # an empty file warns; it is reported below
            warnings.simplefilter("ignore", UserWarning)
            shape = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
    except (ValueError, UnicodeDecodeError) as error:
        raise DataFormatError(path, f"expected lines 'x,y,z,nx,ny,nz' of numbers ({error})") from None
    if not len(shape):
        raise DataFormatError(path, "no points (empty file)")
    if shape.shape[1] != 6:
        raise DataFormatError(path, f"expected 6 comma-separated values per line (x,y,z,nx,ny,nz), got "
                                    f"{shape.shape[1]}")
    check_finite(shape, path)
    return shape


def y_up_to_z_up(shape: np.ndarray) -> np.ndarray:
    """[N, 6] points and normals turned from ModelNet's y up to pc3d's z up: (x, y, z) -> (x, -z, y)."""
    out = shape[:, [0, 2, 1, 3, 5, 4]]
    out[:, [1, 4]] *= -1
    return out


def pc_normalize(xyz: np.ndarray) -> np.ndarray:
    """xyz [N, 3] centred on its centroid and scaled so the farthest point is at distance 1 (PointNet++)."""
    xyz = xyz - xyz.mean(0)
    scale = np.linalg.norm(xyz, axis=1).max()
    return xyz / scale if scale > 0 else xyz


def shape_class(shape_id: str) -> str:
    """The class of a shape id: the id without its last "_NNNN" ("night_stand_0012" -> "night_stand")."""
    return shape_id.rsplit("_", 1)[0]


def read_class_names(path: Path) -> list[str]:
    """The class names of modelnet40_shape_names.txt in class-id order; DataFormatError on a duplicate or none."""
    names: dict[str, int] = {}
    for number, line in numbered_lines(path):
        if line in names or len(line.split()) != 1:
            raise DataFormatError(path, f"line {number}: expected one new class name, got {line[:60]!r}")
        names[line] = number
    if not names:
        raise DataFormatError(path, "lists no class name")
    return list(names)


class ModelNet40(PointCloudDataset):
    """The shapes of a split as classification samples: points [N, 6] (x, y, z, nx, ny, nz; z up) and label.

    root: the folder holding modelnet40_normal_resampled/ (or that folder). split: train | test.
    num_points: keep the first num_points points of each file (None: all). normalize: pc_normalize x, y, z.
    categories: 40, or 10 for ModelNet10 (its class and split lists, the same shape files).
    ``class_names`` come from modelnet<categories>_shape_names.txt; ``labels`` int64 [len] are the class ids in
    split order (the classification hook reads them without loading points).
    """

    feature_names = ("nx", "ny", "nz")

    def __init__(self, root: str | PathLike, split: str = "train", num_points: int | None = None,
                 normalize: bool = True, transforms=None, augmentations=None, voxelizer=None,
                 point_cloud_range=None, voxel_size=None, seed: int | None = None, skip_bad_frames: bool = False,
                 training: bool | None = None, categories: int = 40):
        if split not in SPLITS:
            raise ConfigError(f"ModelNet40 split must be one of {SPLITS}, got {split!r}")
        if num_points is not None and (isinstance(num_points, bool) or int(num_points) < 1):
            raise ConfigError(f"num_points must be >= 1 or null, got {num_points!r}")
        if categories not in CATEGORIES:
            raise ConfigError(f"categories must be 40 (ModelNet40) or 10 (ModelNet10), got {categories!r}")
        super().__init__(transforms, augmentations, voxelizer, point_cloud_range, voxel_size, seed, skip_bad_frames,
                         training)
        root = Path(root)
        self.root = root / FOLDER if (root / FOLDER).is_dir() else root
        self.split, self.normalize = split, bool(normalize)
        self.num_points = None if num_points is None else int(num_points)
        self.categories = int(categories)
        names_file = list_file(self.categories, "shape_names")
        self.class_names = read_class_names(self.root / names_file)
        split_file = self.root / list_file(self.categories, split)
        self.frames = read_ids(split_file)
        index = {name: i for i, name in enumerate(self.class_names)}
        unknown = [f for f in self.frames if shape_class(f) not in index]
        if unknown:
            raise DataFormatError(split_file, f"shape {unknown[0]!r}: class {shape_class(unknown[0])!r} is not in "
                                              f"{names_file} ({len(unknown)} such shapes)")
        self.labels = np.array([index[shape_class(f)] for f in self.frames], np.int64)

    def path(self, index: int) -> Path:
        shape_id = self.frames[index]
        return self.root / shape_class(shape_id) / f"{shape_id}.txt"

    def load(self, index: int) -> dict:
        path = self.path(index)
        shape = read_shape(path)
        if self.num_points is not None:
            if len(shape) < self.num_points:
                self.note(f"shapes with fewer than num_points = {self.num_points} points (all kept)", path)
            shape = shape[:self.num_points]
        shape = y_up_to_z_up(shape)
        if self.normalize:
            shape[:, :3] = pc_normalize(shape[:, :3])
        return {"frame_id": self.frames[index], "points": np.ascontiguousarray(shape, np.float32),
                "normal_columns": (3, 4, 5), "label": int(self.labels[index]), "metadata": {"source": str(path)}}

