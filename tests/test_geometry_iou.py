"""Rotated IoU against shapely, IoU / NMS properties, and points-in-boxes against brute force."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import Polygon

from pc3d.errors import DataFormatError
from pc3d.geometry import (
    boxes_to_corners,
    iou_3d,
    iou_3d_aligned,
    iou_bev,
    iou_bev_aligned,
    iou_bev_nearest,
    nms_circle,
    nms_multiclass,
    nms_rotated,
    points_in_boxes,
    points_in_boxes_count,
    rotate_points_z,
)


def random_boxes(rng, m, spread=4.0):
    return np.c_[rng.uniform(-spread, spread, (m, 2)), rng.uniform(-1, 1, m), rng.uniform(0.5, 4.0, (m, 3)),
                 rng.uniform(-np.pi, np.pi, m)]


def shapely_iou(a, b):
    """(BEV IoU, 3D IoU) of two boxes [7] through shapely polygons."""
    pa = Polygon(boxes_to_corners(a[None])[0, :4, :2])
    pb = Polygon(boxes_to_corners(b[None])[0, :4, :2])
    inter = pa.intersection(pb).area
    bev = inter / (pa.area + pb.area - inter)
    zo = max(0.0, min(a[2] + a[5] / 2, b[2] + b[5] / 2) - max(a[2] - a[5] / 2, b[2] - b[5] / 2))
    vol = inter * zo
    return bev, vol / (pa.area * a[5] + pb.area * b[5] - vol)


def special_pairs(rng):
    """Identical, touching, contained, parallel-edge, shared-edge and far-apart box pairs."""
    base = np.array([1.0, 2.0, 0.0, 4.0, 2.0, 1.5, 0.4])
    c, s = np.cos(0.4), np.sin(0.4)
    pairs = [(base, base.copy())]
    touching = base.copy()
    touching[:2] += 4.0 * np.array([c, s])  # shares the front face
    pairs.append((base, touching))
    corner = base.copy()
    corner[:2] += 4.0 * np.array([c, s]) + 2.0 * np.array([-s, c])  # meets at one corner
    pairs.append((base, corner))
    inner = base.copy()
    inner[3:6] = [2.0, 1.0, 0.5]
    pairs.append((base, inner))
    shifted = base.copy()
    shifted[:2] += 1.3 * np.array([c, s])  # parallel edges, overlapping along the length
    pairs.append((base, shifted))
    turned = base.copy()
    turned[6] += np.pi / 2
    turned[3:5] = [2.0, 4.0]  # the same rectangle described the other way round
    pairs.append((base, turned))
    flipped = base.copy()
    flipped[6] -= np.pi
    pairs.append((base, flipped))
    far = base.copy()
    far[0] += 50
    pairs.append((base, far))
    stacked = base.copy()
    stacked[2] += 1.5  # touching in z
    pairs.append((base, stacked))
    for _ in range(191):
        a = random_boxes(rng, 1)[0]
        b = random_boxes(rng, 1)[0]
        pairs.append((a, b))
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def test_iou_matches_shapely(rng):
    a, b = special_pairs(rng)
    ref = np.array([shapely_iou(x, y) for x, y in zip(a, b, strict=True)])
    np.testing.assert_allclose(iou_bev_aligned(a, b), ref[:, 0], atol=1e-6)
    np.testing.assert_allclose(iou_3d_aligned(a, b), ref[:, 1], atol=1e-6)
    assert iou_bev_aligned(a, b)[[0, 5, 6]] == pytest.approx([1, 1, 1], abs=1e-9)
    assert iou_3d_aligned(a, b)[[1, 2, 7, 8]] == pytest.approx([0, 0, 0, 0], abs=1e-9)
    full = iou_bev(a[:40], b[:30])
    full_ref = np.array([[shapely_iou(x, y)[0] for y in b[:30]] for x in a[:40]])
    np.testing.assert_allclose(full, full_ref, atol=1e-6)
    full3 = iou_3d(a[:40].astype(np.float32), b[:30].astype(np.float32))
    assert full3.dtype == np.float32 and full3.shape == (40, 30)
    t = iou_bev(torch.from_numpy(a[:5]), torch.from_numpy(b[:5]))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64


def test_iou_nearest_axis():
    a = np.array([[0, 0, 0, 4, 2, 1, 0.0], [0, 0, 0, 4, 2, 1, np.pi / 2 - 0.1]])
    b = np.array([[0, 0, 0, 2, 4, 1, 0.0]])
    out = iou_bev_nearest(a, b)
    # the first box stays along x: 2 x 2 overlap of two 8 m^2 boxes; the second turns to y: equal
    np.testing.assert_allclose(out[:, 0], [4 / 12, 1.0])


def test_iou_errors():
    with pytest.raises(DataFormatError, match="7"):
        iou_bev(np.zeros((2, 6)), np.zeros((2, 7)))
    nan = np.ones((2, 7))
    nan[1, 3] = np.nan
    with pytest.raises(DataFormatError, match="NaN"):
        iou_3d(nan, np.ones((1, 7)))
    with pytest.raises(DataFormatError, match="as many"):
        iou_bev_aligned(np.ones((2, 7)), np.ones((3, 7)))


box_strategy = st.tuples(
    st.floats(-5, 5), st.floats(-5, 5), st.floats(-1, 1), st.floats(0.2, 5), st.floats(0.2, 5), st.floats(0.2, 3),
    st.floats(-np.pi, np.pi),
)


@settings(max_examples=60, deadline=None)
@given(box_strategy, box_strategy, st.floats(-np.pi, np.pi), st.floats(-20, 20), st.floats(-20, 20))
def test_iou_properties(a, b, angle, tx, ty):
    a = np.array([a])
    b = np.array([b])
    for f in (iou_bev, iou_3d):
        ab = f(a, b)[0, 0]
        assert 0.0 <= ab <= 1.0
        assert ab == pytest.approx(f(b, a)[0, 0], abs=1e-9)
        assert f(a, a)[0, 0] == pytest.approx(1.0, abs=1e-9)
        # rotate both boxes about the origin and translate them: the IoU is unchanged
        moved = []
        for box in (a, b):
            m = box.copy()
            m[:, :3] = rotate_points_z(box[:, :3], angle) + [tx, ty, 0.0]
            m[:, 6] += angle
            moved.append(m)
        assert f(*moved)[0, 0] == pytest.approx(ab, abs=1e-7)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.05, 0.9))
def test_nms_properties(seed, threshold):
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, 40, spread=6.0)
    scores = rng.choice([0.1, 0.5, 0.9], 40) if seed % 2 else rng.random(40)
    keep = nms_rotated(boxes, scores, threshold)
    # descending score, ties by lower index
    order = np.lexsort((keep, -scores[keep]))
    np.testing.assert_array_equal(keep, keep[order])
    iou = iou_bev(boxes, boxes)
    kept_iou = iou[np.ix_(keep, keep)]
    assert (kept_iou[~np.eye(len(keep), dtype=bool)] <= threshold).all()
    # the best box of any overlapping pair is kept, and every dropped box has a better kept box over it
    best = np.lexsort((np.arange(40), -scores))[0]
    assert best in keep
    rank = np.empty(40, int)
    rank[np.lexsort((np.arange(40), -scores))] = np.arange(40)
    for j in np.setdiff1d(np.arange(40), keep):
        assert any(iou[i, j] > threshold and rank[i] < rank[j] for i in keep)
    assert len(nms_rotated(boxes, scores, threshold, post_max_size=2)) <= 2
    np.testing.assert_array_equal(nms_rotated(boxes, scores, threshold, pre_max_size=40), keep)


def test_nms_reference_and_variants(rng):
    boxes = random_boxes(rng, 200, spread=15.0)
    scores = rng.random(200)
    # plain greedy reference over the full IoU matrix
    iou = iou_bev(boxes, boxes)
    order = np.argsort(-scores, kind="stable")
    suppressed = np.zeros(200, bool)
    ref = []
    for i in order:
        if not suppressed[i]:
            ref.append(i)
            suppressed |= iou[i] > 0.3
    np.testing.assert_array_equal(nms_rotated(boxes, scores, 0.3), ref)
    t = nms_rotated(torch.from_numpy(boxes), torch.from_numpy(scores), 0.3)
    assert t.dtype == torch.int64 and t.tolist() == ref
    labels = rng.integers(0, 3, 200)
    multi = nms_multiclass(boxes, scores, labels, 0.3)
    for c in range(3):
        idx = np.flatnonzero(labels == c)
        np.testing.assert_array_equal(np.sort(multi[labels[multi] == c]), np.sort(idx[nms_rotated(boxes[idx],
                                                                                                 scores[idx], 0.3)]))
    assert (np.diff(scores[multi]) <= 0).all()
    circle = nms_circle(boxes, scores, 1.0)
    d = np.hypot(*(boxes[circle, None, :2] - boxes[None, circle, :2]).transpose(2, 0, 1))
    assert (d[~np.eye(len(circle), dtype=bool)] > 1.0).all()
    dropped = np.setdiff1d(np.arange(200), circle)
    dd = np.hypot(*(boxes[dropped, None, :2] - boxes[None, circle, :2]).transpose(2, 0, 1))
    assert (dd.min(1) <= 1.0).all()
    assert len(nms_rotated(np.zeros((0, 7)), np.zeros(0), 0.5)) == 0
    with pytest.raises(DataFormatError, match="scores"):
        nms_rotated(boxes, scores[:5], 0.5)


def brute_points_in_boxes(points, boxes):
    first = np.full(len(points), -1)
    count = np.zeros(len(boxes), int)
    for j in range(len(boxes) - 1, -1, -1):
        b = boxes[j].astype(np.float64)
        d = points[:, :2].astype(np.float64) - b[:2]
        c, s = np.cos(b[6]), np.sin(b[6])
        lx = d[:, 0] * c + d[:, 1] * s
        ly = -d[:, 0] * s + d[:, 1] * c
        inside = (np.abs(lx) <= b[3] / 2) & (np.abs(ly) <= b[4] / 2) & (np.abs(points[:, 2] - b[2]) <= b[5] / 2)
        first[inside] = j
        count[j] = inside.sum()
    return first, count


def test_points_in_boxes_brute_force(rng):
    boxes = random_boxes(rng, 30, spread=10.0)
    boxes[5] = boxes[4]  # overlapping boxes: the point goes to the lower index, both count it
    boxes[6, 3:6] = [60.0, 0.5, 3.0]  # one long box spanning many buckets
    # points near the faces (just in and just out) plus uniform ones
    local = rng.uniform(-0.5, 0.5, (30, 200, 3))
    face = rng.integers(0, 3, (30, 200))
    sign = rng.choice([-1, 1], (30, 200))
    eps = rng.choice([-1e-4, 1e-4], (30, 200))
    np.put_along_axis(local, face[..., None], (sign * (0.5 + eps))[..., None], axis=2)
    local *= boxes[:, None, 3:6]
    pts = rotate_points_z(local, boxes[:, 6]) + boxes[:, None, :3]
    pts = np.r_[pts.reshape(-1, 3), rng.uniform([-15, -15, -3], [15, 15, 3], (3000, 3))]
    pts = np.c_[pts, rng.random(len(pts))].astype(np.float32)
    first, count = brute_points_in_boxes(pts, boxes.astype(np.float32))
    np.testing.assert_array_equal(points_in_boxes(pts, boxes.astype(np.float32)), first)
    np.testing.assert_array_equal(points_in_boxes_count(pts, boxes.astype(np.float32)), count)
    assert (first >= 0).sum() > 2000 and count[5] == count[4] > 0
    t = points_in_boxes(torch.from_numpy(pts), torch.from_numpy(boxes))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.int32
    assert points_in_boxes(pts, np.zeros((0, 7))).tolist() == [-1] * len(pts)
    assert points_in_boxes_count(pts[:0], boxes).tolist() == [0] * 30
    with pytest.raises(DataFormatError):
        points_in_boxes(pts[:, :2], boxes)


def test_nms_post_max_size_zero_keeps_nothing():
    """post_max_size caps the result, 0 included (the kernels kept their first box before looking at the cap)."""
    from pc3d.geometry import nms_axis_aligned

    boxes = np.array([[0, 0, 0, 1, 1, 1, 0], [5, 5, 0, 1, 1, 1, 0]], np.float32)
    scores, labels = np.array([0.9, 0.8], np.float32), np.array([1, 2])
    assert len(nms_rotated(boxes, scores, 0.5, post_max_size=0)) == 0
    assert len(nms_circle(boxes, scores, 1.0, post_max_size=0)) == 0
    assert len(nms_multiclass(boxes, scores, labels, 0.5, post_max_size=0)) == 0
    assert len(nms_axis_aligned(boxes, scores, labels, 0.5, post_max_size=0)) == 0
    assert nms_rotated(boxes, scores, 0.5, post_max_size=1).tolist() == [0]


def test_nearest_bev_iou_turns_a_box_at_exactly_a_quarter_turn():
    """OpenPCDet keeps a box's dx, dy only below pi / 4 (limit_period(h, 0.5, pi).abs() < pi / 4): a 4 x 1 box at
    exactly pi / 4 becomes 1 x 4 against the same box at 0, IoU 1 / 7."""
    a = np.array([[0, 0, 0, 4, 1, 1, np.pi / 4]])
    b = np.array([[0, 0, 0, 4, 1, 1, 0.0]])
    assert iou_bev_nearest(a, b)[0, 0] == pytest.approx(1 / 7)
