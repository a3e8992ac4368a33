"""Simulated ModelNet40 (pc3d.sim.shapes, the resampled-layout writer) and its loader (pc3d.data.modelnet)."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import torch

from pc3d.data import Collate
from pc3d.data.modelnet import ModelNet40, read_shape, y_up_to_z_up
from pc3d.data.transforms.normals import RotationWithNormals
from pc3d.errors import ConfigError, DataFormatError
from pc3d.sim.api import simulate_dataset
from pc3d.sim.primitives import rot_x, rot_z
from pc3d.sim.shapes import SHAPE_NAMES, Box, Disk, Frustum, Sphere, Torus, sample_surfaces
from pc3d.sim.writers.modelnet import FOLDER, simulated_shape

LINE = re.compile(r"^-?\d\.\d{6}(,-?\d\.\d{6}){5}$")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return simulate_dataset("modelnet40", tmp_path_factory.mktemp("mn") / "sim_modelnet40", frames=24, seed=0)


def _ids(root, split):
    return (root / FOLDER / f"modelnet40_{split}.txt").read_text().split()


def test_layout_and_line_format(root):
    folder = root / FOLDER
    assert (folder / "modelnet40_shape_names.txt").read_text().split() == list(SHAPE_NAMES)
    train, test = _ids(root, "train"), _ids(root, "test")
    assert len(train) + len(test) == 24 and not set(train) & set(test)
    # 24 shapes over 16 classes: 2 of each of the first 8 (one train, one test), 1 of the others (train)
    assert train[:2] == ["airplane_0001", "bed_0001"] and test[0] == "airplane_0002" and len(test) == 8
    for shape_id in train + test:
        name = shape_id.rsplit("_", 1)[0]
        lines = (folder / name / f"{shape_id}.txt").read_text().splitlines()
        assert len(lines) == 10_000
        assert all(LINE.match(line) for line in lines[:50] + lines[-50:]), lines[0]
    shape = read_shape(folder / "chair" / "chair_0001.txt")
    assert shape.shape == (10_000, 6)
    assert np.abs(np.linalg.norm(shape[:, 3:], axis=1) - 1).max() < 1e-5  # 6 decimals
    assert np.linalg.norm(shape[:, :3], axis=1).max() <= 1 + 1e-5
    # ModelNet is y up: the seat's large faces have normals along y, the chair's sides (z) are thin
    assert np.abs(shape[:, 4]).mean() > np.abs(shape[:, 5]).mean()
    # the file holds the sampled surfaces (checked primitive by primitive below), rounded to 6 decimals
    c = SHAPE_NAMES.index("chair")
    assert np.abs(shape - simulated_shape(0, c, 0)).max() <= 1e-6


def test_same_seed_same_bytes(tmp_path):
    a = simulate_dataset("modelnet40", tmp_path / "a", frames=3, seed=7)
    b = simulate_dataset("modelnet40", tmp_path / "b", frames=3, seed=7)
    files = sorted(p.relative_to(a) for p in a.rglob("*.txt"))
    assert len(files) == 9 and files == sorted(p.relative_to(b) for p in b.rglob("*.txt"))  # 3 shapes, 6 lists
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    c = simulate_dataset("modelnet40", tmp_path / "c", frames=3, seed=8)
    shape = f"{FOLDER}/airplane/airplane_0001.txt"
    assert (a / shape).read_bytes() != (c / shape).read_bytes()


def _local(part, points, normals):
    rotation = np.eye(3) if part.rotation is None else part.rotation
    return (points - np.asarray(part.centre)) @ rotation, normals @ rotation


def test_box_points_on_faces_with_face_normals():
    box = Box(centre=(0.3, -0.2, 1.0), rotation=rot_z(0.4) @ rot_x(0.3), size=(2.0, 1.0, 0.5))
    points, normals = sample_surfaces([box], 20_000, np.random.default_rng(0))
    local, n = _local(box, points, normals)
    half = np.array(box.size) / 2
    axis = np.abs(n).argmax(1)
    rows = np.arange(len(n))
    assert np.allclose(np.abs(n[rows, axis]), 1) and np.allclose(np.linalg.norm(n, axis=1), 1)
    assert np.allclose(local[rows, axis], np.sign(n[rows, axis]) * half[axis])  # on the face the normal names
    assert (np.abs(local) <= half + 1e-9).all()
    # uniform by area: each pair of faces gets its share of the points
    share = np.bincount(axis, minlength=3) / len(n)
    areas = np.array([0.5, 1.0, 2.0])
    assert np.allclose(share, areas / areas.sum(), atol=0.015)


def test_round_surfaces_exact_normals_and_area_density():
    rng = np.random.default_rng(1)
    cone = Frustum(centre=(0, 0, 1), rotation=rot_x(0.5), r0=1.0, r1=0.0, length=2.0)
    p, n = _local(cone, *sample_surfaces([cone], 20_000, rng))
    radius = np.hypot(p[:, 0], p[:, 1])
    assert np.allclose(radius, (1 - p[:, 2]) / 2)  # r0 = 1 at z = -1, 0 at z = +1
    assert np.allclose((n * np.array([1.0, 1.0, 0.0]) * p).sum(1) / radius, np.sqrt(4 / 5), atol=1e-6)
    assert np.allclose(n[:, 2], np.sqrt(1 / 5))  # slope of the side
    assert abs((p[:, 2] < 0).mean() - 0.75) < 0.015  # the wide half holds 3/4 of the area
    torus = Torus(centre=(1, 2, 3), major=1.0, minor=0.4)
    p, n = _local(torus, *sample_surfaces([torus], 20_000, rng))
    ring = p * np.array([1.0, 1.0, 0.0])
    ring /= np.linalg.norm(ring, axis=1, keepdims=True)
    assert np.allclose(p - ring, 0.4 * n)  # the point is the tube radius along its normal from the ring
    assert abs((np.hypot(p[:, 0], p[:, 1]) > 1).mean() - (0.5 + 0.4 / np.pi)) < 0.015  # the outer side is larger
    for part in (Sphere(centre=(0, 1, 0), radius=0.5), Disk(rotation=rot_x(1.0), radius=1.0, inner=0.5)):
        p, n = _local(part, *sample_surfaces([part], 2_000, rng))
        if isinstance(part, Sphere):
            assert np.allclose(p, 0.5 * n)
        else:
            assert np.allclose(n, [0, 0, 1]) and np.allclose(p[:, 2], 0)
            assert (np.linalg.norm(p, axis=1) >= 0.5 - 1e-12).all()


def test_inner_walls_face_inward():
    wall = Frustum(r0=1.0, r1=1.0, length=1.0, flip=True)
    p, n = sample_surfaces([wall], 500, np.random.default_rng(2))
    assert np.allclose(n, -p * np.array([1.0, 1.0, 0.0]))


def test_loader_samples(root):
    ds = ModelNet40(root, "train")
    assert ds.class_names == list(SHAPE_NAMES) and ds.feature_names == ("nx", "ny", "nz")
    assert ds.labels.dtype == np.int64 and len(ds.labels) == len(ds) == 16
    assert [ds.class_names[k] for k in ds.labels] == [f.rsplit("_", 1)[0] for f in ds.frames]
    sample = ds.load(0)
    points = sample["points"]
    assert points.dtype == np.float32 and points.shape == (10_000, 6)
    assert sample["frame_id"] == "airplane_0001" and sample["label"] == 0
    assert sample["metadata"]["source"].endswith("airplane/airplane_0001.txt")
    assert np.allclose(points[:, :3].mean(0), 0, atol=1e-5)
    assert np.isclose(np.linalg.norm(points[:, :3], axis=1).max(), 1, atol=1e-5)
    # z up: the normals are the file's, turned (x, y, z) -> (x, -z, y)
    raw = read_shape(root / FOLDER / "airplane" / "airplane_0001.txt")
    assert np.allclose(points[:, 3:], y_up_to_z_up(raw)[:, 3:])
    first = ModelNet40(root / FOLDER, "test", num_points=1000, normalize=False).load(0)
    file = read_shape(root / FOLDER / "airplane" / "airplane_0002.txt")
    assert np.array_equal(first["points"], y_up_to_z_up(file[:1000]))


def test_modelnet10_lists(root):
    ten = ModelNet40(root, "train", categories=10)
    assert ten.class_names == ["bed", "chair", "monitor", "sofa", "table"]  # the simulated classes ModelNet10 has
    forty = ModelNet40(root, "train")
    assert ten.frames == [f for f in forty.frames if f.rsplit("_", 1)[0] in ten.class_names]
    assert [ten.class_names[k] for k in ten.labels] == [f.rsplit("_", 1)[0] for f in ten.frames]
    assert ten.load(0)["label"] == 0 and ten.path(0) == forty.path(forty.frames.index(ten.frames[0]))
    assert set(ModelNet40(root, "test", categories=10).frames) <= set(ModelNet40(root, "test").frames)
    with pytest.raises(ConfigError, match="categories"):
        ModelNet40(root, "train", categories=20)


def test_collate_gives_labels(root):
    ds = ModelNet40(root, "test", seed=0)
    batch = Collate()([ds[0], ds[1]])
    assert batch["label"].dtype == torch.int64 and batch["label"].tolist() == ds.labels[:2].tolist()


def test_rotation_turns_normals():
    normals = np.array([[1.0, 0.0, 0.0], [0.0, 0.6, 0.8]], np.float32)
    sample = {"points": np.concatenate([2 * normals, normals], 1)}
    out = RotationWithNormals(angle=[np.pi / 2, np.pi / 2])(sample, np.random.default_rng(0))
    expected = np.array([[0.0, 1.0, 0.0], [-0.6, 0.0, 0.8]])
    assert np.allclose(out["points"][:, 3:], expected, atol=1e-6)
    assert np.allclose(out["points"][:, :3], 2 * expected, atol=1e-6)


def _broken(root, tmp_path, shape_id="bed_0001"):
    dst = tmp_path / "mn"
    shutil.copytree(root, dst)
    return dst, dst / FOLDER / shape_id.rsplit("_", 1)[0] / f"{shape_id}.txt"


@pytest.mark.parametrize("case", ["columns", "text", "empty", "missing"])
def test_bad_shape_files_name_the_file(root, tmp_path, case):
    dst, path = _broken(root, tmp_path)
    if case == "columns":
        path.write_text("0.1,0.2,0.3,0.0,1.0\n" * 10)
    elif case == "text":
        path.write_text("0.1,0.2,0.3,0.0,1.0,0.0\n0.1,abc,0.3,0.0,1.0,0.0\n")
    elif case == "empty":
        path.write_text("")
    else:
        path.unlink()
    ds = ModelNet40(dst, "train")
    with pytest.raises(DataFormatError) as error:
        ds[ds.frames.index("bed_0001")]
    assert str(path) in str(error.value)


def test_unknown_class_names_the_split_file(root, tmp_path):
    dst, _ = _broken(root, tmp_path)
    split = dst / FOLDER / "modelnet40_train.txt"
    split.write_text(split.read_text() + "spaceship_0001\n")
    with pytest.raises(DataFormatError, match="spaceship") as error:
        ModelNet40(dst, "train")
    assert str(split) in str(error.value)
