"""Box coders round trips (numpy and torch), range images (Waymo conventions), knn / radius neighbours."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pc3d.errors import ConfigError, DataFormatError
from pc3d.geometry import (
    CenterPointCoder,
    ResidualCoder,
    beam_inclinations,
    knn,
    points_to_range_image,
    radius_components,
    radius_neighbors,
    range_image_to_points,
    spherical_projection,
    wrap_angle,
)


def boxes_and_anchors(rng, m=64, velocity=False):
    boxes = np.c_[rng.uniform(0, 70, m), rng.uniform(-40, 40, m), rng.uniform(-2, 0, m),
                  rng.uniform([3, 1.5, 1.4], [5, 2, 1.8], (m, 3)), rng.uniform(-np.pi, np.pi, m)]
    anchors = np.c_[boxes[:, :3] + rng.normal(0, 0.5, (m, 3)), np.tile([3.9, 1.6, 1.56], (m, 1)),
                    rng.choice([0, np.pi / 2], m)]
    if velocity:
        boxes = np.c_[boxes, rng.normal(0, 5, (m, 2))]
        anchors = np.c_[anchors, np.zeros((m, 2))]
    return boxes, anchors


@pytest.mark.parametrize("sincos", [False, True])
@pytest.mark.parametrize("velocity", [False, True])
def test_residual_coder_round_trip(rng, sincos, velocity):
    boxes, anchors = boxes_and_anchors(rng, velocity=velocity)
    coder = ResidualCoder(encode_angle_by_sincos=sincos, code_size=9 if velocity else 7)
    deltas = coder.encode(boxes, anchors)
    assert deltas.shape == (64, coder.code_size)
    back = coder.decode(deltas, anchors)
    np.testing.assert_allclose(np.delete(back, 6, 1), np.delete(boxes, 6, 1), atol=1e-9)
    assert np.abs(wrap_angle(back[:, 6] - boxes[:, 6])).max() < 1e-9
    # a box equal to its anchor encodes to zeros
    np.testing.assert_allclose(coder.encode(anchors, anchors), 0, atol=1e-12)
    tb, ta = torch.from_numpy(boxes).float().requires_grad_(), torch.from_numpy(anchors).float()
    tdeltas = coder.encode(tb, ta)
    np.testing.assert_allclose(tdeltas.detach().numpy(), deltas, atol=1e-4)
    tback = coder.decode(tdeltas, ta)
    tback.sum().backward()
    assert tb.grad is not None
    np.testing.assert_allclose(tback.detach().numpy()[:, :6], boxes[:, :6], atol=1e-4)


def test_centerpoint_coder_round_trip(rng):
    boxes, _ = boxes_and_anchors(rng, velocity=True)
    coder = CenterPointCoder(voxel_size=[0.1, 0.1, 0.2], point_range=[0, -40, -3, 70.4, 40, 1], out_stride=8)
    cells = coder.cell_index(boxes)
    np.testing.assert_array_equal(cells, np.floor((boxes[:, :2] - [0, -40]) / 0.8))
    targets = coder.encode(boxes, cells)
    assert targets.shape == (64, 10)
    assert (targets[:, :2] >= 0).all() and (targets[:, :2] < 1).all()
    np.testing.assert_allclose(targets[:, 6] ** 2 + targets[:, 7] ** 2, 1)
    back = coder.decode(targets[:, :2], targets[:, 2:3], targets[:, 3:6], targets[:, 6:7], targets[:, 7:8],
                        targets[:, 8:10], cells)
    np.testing.assert_allclose(np.delete(back, 6, 1), np.delete(boxes, 6, 1), atol=1e-9)
    assert np.abs(wrap_angle(back[:, 6] - boxes[:, 6])).max() < 1e-9
    f32 = coder.encode(boxes.astype(np.float32))
    assert f32.dtype == np.float32
    tb = torch.from_numpy(boxes[:, :7]).float()
    tcells = coder.cell_index(tb)
    assert tcells.dtype == torch.int64
    tt = coder.encode(tb, tcells)
    assert tt.shape == (64, 8)
    tback = coder.decode(tt[:, :2], tt[:, 2:3], tt[:, 3:6], tt[:, 6:7], tt[:, 7:8], None, tcells)
    np.testing.assert_allclose(tback[:, :6].numpy(), boxes[:, :6], atol=1e-4)
    with pytest.raises(ConfigError):
        CenterPointCoder([0.1], [0, 0], 0)


def test_beam_inclinations():
    uniform = beam_inclinations(4, min=-0.4, max=0.2)
    np.testing.assert_allclose(uniform, [0.125, -0.025, -0.175, -0.325])
    np.testing.assert_allclose(beam_inclinations(3, values=[-0.3, -0.1, 0.1]), [0.1, -0.1, -0.3])
    with pytest.raises(DataFormatError):
        beam_inclinations(3, values=[0.1, 0.2])
    with pytest.raises(ConfigError):
        beam_inclinations(3)


def _extrinsic(yaw):
    e = np.eye(4)
    e[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
    e[:3, 3] = [1.4, 0.1, 2.2]
    return e


def test_range_image_round_trip(rng):
    h, w, yaw = 64, 2650, 0.3
    incl = beam_inclinations(h, min=-0.3, max=0.04)
    e = _extrinsic(yaw)
    image = rng.uniform(2, 75, (h, w)).astype(np.float32)
    image[rng.random((h, w)) < 0.2] = 0  # empty pixels
    image[0, 0] = -1
    points, pixels = range_image_to_points(image, incl, e)
    assert len(points) == (image > 0).sum()
    image2, row, col, valid = points_to_range_image(points, incl, w, e)
    assert valid.all()
    np.testing.assert_array_equal(np.c_[row, col], pixels)
    np.testing.assert_allclose(image2, np.maximum(image, 0), rtol=1e-6)
    points2, _ = range_image_to_points(image2, incl, e)
    np.testing.assert_allclose(points2, points, atol=1e-4)


def test_range_image_hand_computed_pixel():
    h, w, yaw = 4, 8, 0.25
    incl = beam_inclinations(h, min=-0.4, max=0.2)
    e = _extrinsic(yaw)
    image = np.zeros((h, w), np.float32)
    image[1, 0] = 10.0
    points, pixels = range_image_to_points(image, incl, e)
    # column 0's sensor azimuth is (1 - 1 / W) pi - yaw: about +pi minus the extrinsic yaw
    az = (1 - 1 / w) * np.pi - yaw
    sensor = 10.0 * np.array([np.cos(az) * np.cos(incl[1]), np.sin(az) * np.cos(incl[1]), np.sin(incl[1])])
    np.testing.assert_allclose(points[0], e[:3, :3] @ sensor + e[:3, 3], rtol=1e-6)
    assert np.arctan2(*(points[0, :2] - e[:2, 3])[::-1]) == pytest.approx((1 - 1 / w) * np.pi)
    assert pixels.tolist() == [[1, 0]]
    # a nearer point in the same pixel wins; a point above the top beam is invalid
    extra = np.r_[points, (points - e[:3, 3]) * 0.5 + e[:3, 3], [[0.0, 0.0, 100.0]]]
    img, row, col, valid = points_to_range_image(extra, incl, w, e)
    assert img[1, 0] == pytest.approx(5.0) and valid.tolist() == [True, True, False] and row[2] == col[2] == -1


def test_spherical_projection():
    pts = np.array([[10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [-10.0, -0.001, 0.0], [10.0, 0.0, -10.0 * np.tan(0.5)]])
    row, col, rng_ = spherical_projection(pts, 3.0, -25.0, 64, 2048)
    np.testing.assert_allclose(rng_[:3], 10.0)
    assert col.tolist()[:3] == [1024, 512, 2047]
    fov = np.deg2rad(28.0)
    assert row[0] == int(np.floor((1 - np.deg2rad(25.0) / fov) * 64))
    assert row[3] == 63  # below the field of view: clipped to the last row
    tilted = np.array([[10.0, 0.0, 10.0 * np.tan(np.deg2rad(6.01))]])  # a field of view from 2 to 10 degrees up
    assert spherical_projection(tilted, 10.0, 2.0, 64, 2048)[0].tolist() == [31]
    with pytest.raises(ConfigError, match="top must lie above its bottom"):
        spherical_projection(pts, -25.0, 3.0, 64, 2048)  # up and down swapped


def brute_knn(q, r, k):
    d = ((q[:, None, :].astype(np.float64) - r[None].astype(np.float64)) ** 2).sum(-1)
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, idx, 1), idx, d


@pytest.mark.parametrize("layout", ["uniform", "surface", "clustered"])
def test_knn_and_radius_brute_force(rng, layout):
    if layout == "uniform":
        ref = rng.uniform(-10, 10, (3000, 3))
    elif layout == "surface":
        xy = rng.uniform(-30, 30, (3000, 2))
        ref = np.c_[xy, 0.02 * rng.normal(size=3000)]
    else:
        ref = np.r_[rng.normal(0, 0.05, (1500, 3)), rng.normal(20, 3, (1500, 3))]
    query = np.r_[ref[:300] + rng.normal(0, 0.1, (300, 3)), rng.uniform(-40, 40, (100, 3))].astype(np.float32)
    ref = ref.astype(np.float32)
    d_ref, i_ref, d_all = brute_knn(query, ref, 8)
    dist, idx = knn(query, ref, 8)
    assert dist.dtype == np.float32 and idx.dtype == np.int64
    np.testing.assert_array_equal(idx, i_ref)
    np.testing.assert_allclose(dist, d_ref, rtol=1e-5, atol=1e-6)
    radius = 1.5
    got = radius_neighbors(query, ref, radius, 16)
    for i in range(len(query)):
        inside = np.flatnonzero(d_all[i] <= radius * radius)
        inside = inside[np.argsort(d_all[i, inside], kind="stable")][:16]
        np.testing.assert_array_equal(got[i, : len(inside)], inside)
        assert (got[i, len(inside):] == -1).all()


@pytest.mark.parametrize("k", [1, 3])
def test_knn_from_far_outside_a_thin_cloud_brute_force(rng, k):
    """Queries 40-120 m from a sweep-like cloud (thin in z; a segmentor's points outside its voxel grid looking for
    the nearest voxel), searched on a coarser grid of their own, mixed with near ones: the brute-force answer."""
    xy = rng.uniform(-32, 32, (4000, 2))
    ref = np.c_[xy, rng.uniform(-2, 1, 4000)].astype(np.float32)
    angle, dist = rng.uniform(0, 2 * np.pi, 500), rng.uniform(40, 120, 500)
    far = np.c_[dist * np.cos(angle), dist * np.sin(angle), rng.uniform(-4, 6, 500)]
    query = np.r_[far[:250], ref[:300] + rng.normal(0, 0.2, (300, 3)), far[250:]].astype(np.float32)  # mixed
    d_ref, i_ref, _ = brute_knn(query, ref, k)
    got_d, got_i = knn(query, ref, k)
    np.testing.assert_array_equal(got_i, i_ref)
    np.testing.assert_allclose(got_d, d_ref, rtol=1e-5)


def test_non_finite_rows_are_points_nowhere(rng):
    """A NaN / inf reference row is never a neighbour (one NaN reference emptied every answer: the grid's cell
    became NaN); a NaN / inf query row has none (a NaN query never stopped searching); the others are brute force,
    with the references' own row numbers. A query 3e38 m out (finite) is answered too."""
    ref = rng.uniform(-5, 5, (400, 3)).astype(np.float32)
    ref[[7, 100]] = [np.nan, 0, 0], [0, np.inf, 0]
    query = rng.uniform(-6, 6, (50, 3)).astype(np.float32)
    query[[3, 9]] = [np.nan, np.nan, np.nan], [-np.inf, 0, 0]
    query[20] = [3e38, 0, 0]
    finite_ref = np.delete(np.arange(400), [7, 100])
    rows = np.delete(np.arange(50), [3, 9])
    d_ref, i_ref, d_all = brute_knn(query[rows], ref[finite_ref], 4)
    dist, idx = knn(query, ref, 4)
    np.testing.assert_array_equal(idx[rows], finite_ref[i_ref])
    with np.errstate(over="ignore"):  # 3e38 m out: inf in float32
        np.testing.assert_allclose(dist[rows], d_ref.astype(np.float32), rtol=1e-5)
    assert (idx[[3, 9]] == -1).all() and np.isinf(dist[[3, 9]]).all()
    got = radius_neighbors(query, ref, 2.0, 8)
    assert (got[[3, 9]] == -1).all()
    for row, i in enumerate(rows):
        inside = np.flatnonzero(d_all[row] <= 4.0)
        inside = finite_ref[inside[np.argsort(d_all[row, inside], kind="stable")][:8]]
        np.testing.assert_array_equal(got[i, : len(inside)], inside)


@pytest.mark.parametrize("cloud", ["repeated rows", "two tight clusters"])
def test_knn_grid_is_not_refined_past_what_the_points_fill(rng, cloud):
    """Repeated rows (a 300-point cloud resampled to 8,192) and two 1 cm clusters 5 m apart: the cells stay at
    least 1/8 of the uniform-density guess (refined without bound they were 1/100 of it, and a query between the
    clusters searched for seconds); answers are brute force."""
    from pc3d.geometry.neighbors import _knn_grid

    if cloud == "repeated rows":
        unique = np.c_[rng.uniform(-20, 20, (300, 2)), rng.uniform(-2, 2, 300)]
        ref = unique[rng.integers(0, 300, 8192)]
    else:
        ref = np.r_[rng.uniform(0, 0.01, (400, 3)), rng.uniform(0, 0.01, (400, 3)) + 5.0 / np.sqrt(3)]
    extent = ref.max(0) - ref.min(0)
    guess = float(np.cbrt(np.prod(extent) * 2 / len(ref)))
    side, _ = _knn_grid(np.ascontiguousarray(ref, np.float64), 4)
    assert side >= guess / 8 * (1 - 1e-9)
    query = np.r_[ref[:50] + 0.01, np.full((1, 3), 2.5 / np.sqrt(3))]
    d_ref, i_ref, _ = brute_knn(query, ref, 4)
    dist, idx = knn(query, ref, 4)
    np.testing.assert_allclose(dist, d_ref.astype(np.float32), rtol=1e-5)
    np.testing.assert_allclose(((query[:, None] - ref[idx]) ** 2).sum(-1), d_ref, rtol=1e-5)  # ties: any of equals


def test_radius_components_brute_force(rng):
    """Clusters against a flood fill over the full distance matrix (every neighbour kept: max_neighbors = N),
    numbered in order of each cluster's first point."""
    xyz = np.r_[rng.normal(0, 0.3, (60, 3)), rng.normal(5, 0.3, (60, 3)), rng.uniform(-20, 20, (40, 3))]
    xyz = xyz[rng.permutation(len(xyz))]
    radius = 0.8
    linked = ((xyz[:, None] - xyz[None]) ** 2).sum(-1) <= radius**2
    want = np.full(len(xyz), -1)
    count = 0
    for start in range(len(xyz)):
        if want[start] >= 0:
            continue
        stack, want[start] = [start], count
        while stack:
            for j in np.flatnonzero(linked[stack.pop()] & (want < 0)):
                want[j] = count
                stack.append(j)
        count += 1
    np.testing.assert_array_equal(radius_components(xyz, radius, max_neighbors=len(xyz)), want)
    assert radius_components(np.zeros((0, 3)), radius).shape == (0,)


def test_knn_padding_torch_and_errors():
    ref = np.array([[0.0, 0, 0], [1, 0, 0], [5, 5, 5]])
    dist, idx = knn(ref[:1], ref, 5)
    assert idx.tolist() == [[0, 1, 2, -1, -1]] and np.isinf(dist[0, 3:]).all()
    tdist, tidx = knn(torch.tensor(ref[:2]), torch.tensor(ref), 2)
    assert isinstance(tidx, torch.Tensor) and tidx.tolist() == [[0, 1], [1, 0]]
    assert knn(ref, np.zeros((0, 3)), 2)[1].tolist() == [[-1, -1]] * 3
    with pytest.raises(ConfigError):
        knn(ref, ref, 0)
    with pytest.raises(ConfigError):
        radius_neighbors(ref, ref, -1.0, 4)
    with pytest.raises(DataFormatError):
        knn(ref[:, :2], ref, 1)


def test_coder_encodings_by_hand():
    """Round trips cannot see a convention that encode and decode share: OpenPCDet's residuals (x, y over the
    anchor's BEV diagonal, z over its height, log size ratios, heading difference) and CenterPoint's targets
    (offset inside the cell, z, log sizes, sin / cos of the heading, in that order)."""
    residual = ResidualCoder().encode(np.array([[1, 2, 3, 4, 2, 3, 0.5]]), np.array([[0, 0, 0, 2, 1, 1.5, 0]]))[0]
    diagonal, ln2 = np.sqrt(5.0), np.log(2.0)  # sqrt(2^2 + 1^2); every size doubles
    np.testing.assert_allclose(residual, [1 / diagonal, 2 / diagonal, 2.0, ln2, ln2, ln2, 0.5], atol=1e-6)
    # x 1.0 on a 0.1 m grid at stride 8 (0.8 m cells from x 0): cell 1, offset 0.25; y -39 from -40: the same
    target = CenterPointCoder([0.1, 0.1], [0, -40], 8).encode(np.array([[1.0, -39.0, 0.5, 2, 1, 1, 0.3]]))[0]
    np.testing.assert_allclose(target, [0.25, 0.25, 0.5, ln2, 0, 0, np.sin(0.3), np.cos(0.3)], atol=1e-6)
