"""Surface normals as feature columns: the mesh's triangles and vertex normals (against hand-computed cases and
the simulator's files), ScanNet with normals, and every geometric transform turning the columns a sample names."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pc3d.data import ScanNetDataset
from pc3d.data.batch import Collate, check_sample
from pc3d.data.ply import read_ply_faces, vertex_normals
from pc3d.data.transforms import GlobalScaling, RandomFlip, affine_sample
from pc3d.data.transforms.normals import RotationWithNormals
from pc3d.errors import DataFormatError
from pc3d.models.tta import View
from pc3d.sim.api import simulate_dataset

# a unit tetrahedron wound so that every triangle's normal points outward
TETRA = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float64)
TETRA_FACES = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


def test_vertex_normals_sum_the_area_weighted_triangle_normals():
    n = vertex_normals(TETRA, TETRA_FACES)
    # the origin touches the three axis faces (area 1/2 each, normals -x, -y, -z): the mean direction
    np.testing.assert_allclose(n[0], -np.ones(3) / np.sqrt(3), atol=1e-6)
    # (1, 0, 0) touches -y, -z (area 1/2) and the slanted face (area sqrt(3)/2, normal (1, 1, 1)/sqrt(3))
    want = np.array([0.0, -0.5, -0.5]) + np.sqrt(3) / 2 * np.ones(3) / np.sqrt(3)
    np.testing.assert_allclose(n[1], want / np.linalg.norm(want), atol=1e-6)
    lonely = vertex_normals(np.vstack([TETRA, [[5.0, 5, 5]]]), TETRA_FACES)
    assert not lonely[4].any() and np.allclose(np.linalg.norm(lonely[:4], axis=1), 1)


def _write_ascii_ply(path, xyz, faces, counts=None):
    counts = [3] * len(faces) if counts is None else counts
    lines = ["ply", "format ascii 1.0", f"element vertex {len(xyz)}", "property float x", "property float y",
             "property float z", f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
    lines += [" ".join(f"{v:g}" for v in p) for p in xyz]
    lines += [" ".join(map(str, [c, *f[:c]])) for c, f in zip(counts, faces, strict=True)]
    path.write_text("\n".join(lines) + "\n")


def test_faces_of_the_simulators_mesh_and_of_an_ascii_file(tmp_path):
    root = simulate_dataset("scannet", tmp_path / "sim", frames=1, seed=2)
    mesh = root / "scans" / "scene0000_00" / "scene0000_00_vh_clean_2.ply"
    plyfile = pytest.importorskip("plyfile")
    ply = plyfile.PlyData.read(str(mesh))
    faces = read_ply_faces(mesh, len(ply["vertex"]))
    np.testing.assert_array_equal(faces, np.stack(ply["face"].data["vertex_indices"]))
    _write_ascii_ply(tmp_path / "t.ply", TETRA, TETRA_FACES)
    np.testing.assert_array_equal(read_ply_faces(tmp_path / "t.ply", 4), TETRA_FACES)
    with pytest.raises(DataFormatError, match="t.ply: face vertex indices outside"):
        read_ply_faces(tmp_path / "t.ply", 3)
    _write_ascii_ply(tmp_path / "q.ply", TETRA, [[0, 1, 2, 3]], counts=[4])
    with pytest.raises(DataFormatError, match="q.ply: faces must be triangles"):
        read_ply_faces(tmp_path / "q.ply", 4)


def test_a_binary_mesh_with_a_quad_is_not_read_as_triangles(tmp_path):
    head = (b"ply\nformat binary_little_endian 1.0\nelement vertex 4\nproperty float x\nproperty float y\n"
            b"property float z\nelement face 2\nproperty list uchar int vertex_indices\nend_header\n")
    faces = np.uint8(3).tobytes() + np.array([0, 1, 2], "<i4").tobytes()
    faces += np.uint8(4).tobytes() + np.array([0, 1, 2, 3], "<i4").tobytes()
    (tmp_path / "b.ply").write_bytes(head + TETRA.astype("<f4").tobytes() + faces)
    with pytest.raises(DataFormatError, match="b.ply: faces must be triangles"):
        read_ply_faces(tmp_path / "b.ply", 4)


def test_scannet_with_normals_adds_three_aligned_unit_columns(tmp_path):
    root = simulate_dataset("scannet", tmp_path, frames=1, seed=2)
    plain = ScanNetDataset(root, "train").load(0)
    s = ScanNetDataset(root, "train", normals=True).load(0)
    check_sample(s)
    assert s["points"].shape == (len(plain["points"]), 9) and s["normal_columns"] == (6, 7, 8)
    np.testing.assert_array_equal(s["points"][:, :6], plain["points"])
    length = np.linalg.norm(s["points"][:, 6:], axis=1)
    assert np.allclose(length[length > 0], 1, atol=1e-5) and (length > 0).mean() > 0.99
    floor = s["points"][:, 2] < 0.01  # the aligned floor faces up, whatever the scene's own axis alignment
    assert floor.any() and np.median(s["points"][floor, 8]) > 0.99
    assert ScanNetDataset(root, "train", normals=True).feature_names == ("r", "g", "b", "nx", "ny", "nz")


def _sample() -> dict:
    normals = np.array([[1.0, 0, 0], [0, 0.6, 0.8]], np.float32)
    return {"frame_id": "f", "points": np.concatenate([2 * normals, normals], 1), "normal_columns": (3, 4, 5)}


def test_global_transforms_turn_the_named_normals_and_keep_them_unit():
    turned = affine_sample(_sample(), np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]))  # a quarter turn
    np.testing.assert_allclose(turned["points"][:, 3:], [[0, 1, 0], [-0.6, 0, 0.8]], atol=1e-6)
    mirrored = RandomFlip(["x"], prob=1.0)(_sample(), np.random.default_rng(0))  # y -> -y
    np.testing.assert_allclose(mirrored["points"][:, 3:], [[1, 0, 0], [0, -0.6, 0.8]], atol=1e-6)
    scaled = GlobalScaling([2.0, 2.0])(_sample(), np.random.default_rng(0))
    np.testing.assert_allclose(scaled["points"][:, 3:], _sample()["points"][:, 3:], atol=1e-6)
    np.testing.assert_allclose(scaled["points"][:, :3], 2 * _sample()["points"][:, :3], atol=1e-6)
    unnamed = {k: v for k, v in _sample().items() if k != "normal_columns"}
    np.testing.assert_array_equal(RandomFlip(["x"], prob=1.0)(unnamed, np.random.default_rng(0))["points"][:, 3:],
                                  _sample()["points"][:, 3:])  # feature columns nobody named stay
    with pytest.raises(DataFormatError, match="f: normal_columns must name feature columns"):
        check_sample({**_sample(), "normal_columns": (3, 4)})


def test_rotation_with_normals_names_its_columns_and_turns_them_once():
    for sample in (_sample(), {k: v for k, v in _sample().items() if k != "normal_columns"}):
        out = RotationWithNormals(angle=[np.pi / 2, np.pi / 2])(sample, np.random.default_rng(0))
        np.testing.assert_allclose(out["points"][:, 3:], [[0, 1, 0], [-0.6, 0, 0.8]], atol=1e-6)
        assert out["normal_columns"] == (3, 4, 5)


def test_collate_and_test_time_views_carry_the_normals():
    batch = Collate()([_sample(), _sample()])
    assert batch["normal_columns"] == (3, 4, 5)
    view = View(quarters=1, mirror=False, scale=1.5)
    seen = view.apply(batch["points"], batch["normal_columns"])
    torch.testing.assert_close(seen[:2, 3:], torch.tensor([[0.0, 1, 0], [-0.6, 0, 0.8]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(seen[:2, :3], 1.5 * 2 * torch.tensor([[0.0, 1, 0], [-0.6, 0, 0.8]]), atol=1e-5, rtol=0)
