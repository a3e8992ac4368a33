"""Fuzzing the voxelizers with hostile input (hypothesis): every example is either voxelized exactly as a float32
reference computes the cells or refused with the ConfigError an independent validity rule predicts; a cloud's
NaN / inf rows are dropped with a warning. The sparse engine's fuzz tests: test_fuzz_engine.py."""
from __future__ import annotations

import math
import warnings

import numpy as np
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from pc3d.errors import ConfigError, DataFormatError
from pc3d.sparse.checks import INT32_MAX
from pc3d.voxel import DynamicVoxelizer, HardVoxelizer, NonFinitePointsWarning, grid_sample

FUZZ = settings(deadline=None, max_examples=60, suppress_health_check=list(HealthCheck), derandomize=True)


# ------------------------------------------------------------------------------------------ voxelizers
hostile_size = st.sampled_from([0.0, -0.5, 1e-46, 1e-12, 1e39, float("nan"), float("inf")])
hostile_bound = st.sampled_from([1e30, -1e30, 1e39, float("nan")])
hostile_span = st.sampled_from([0.0, -1.0, 1e30])
size_value = st.one_of(st.floats(0.05, 2.0), hostile_size)
coordinate = st.one_of(st.floats(-6, 6, width=32), st.sampled_from([float("nan"), float("inf"), -float("inf"),
                                                                    1e30, -3e38, 3e38]))


@st.composite
def voxel_case(draw):
    """(voxel_size, point_range, points [N][4], cell) for a voxelizer: in three examples of four,
    sizes in [0.05, 2] and a range of spans in [0.1, 8] (a usable grid, or one with no cell on an axis),
    in the fourth hostile sizes or bounds (zero, negative, NaN, inf, underflowing or overflowing float32,
    a max not above its min); points spread over the range and a little beyond it, one in eight with a
    hostile or far value in one column; cell: the fractions of the grid at which the test adds a point."""
    hostile = draw(st.integers(0, 3)) == 0

    def pick(good, bad):
        return draw(bad) if hostile and draw(st.booleans()) else draw(good)

    voxel_size = [pick(st.floats(0.05, 2.0), hostile_size) for _ in range(3)]
    lo = [pick(st.floats(-5, 5), hostile_bound) for _ in range(3)]
    span = [pick(st.floats(0.1, 8), hostile_span) for _ in range(3)]
    points = []
    for _ in range(draw(st.integers(0, 30))):
        row = [a + draw(st.floats(-0.25, 1.25)) * b for a, b in zip(lo, span, strict=True)]
        row.append(draw(st.floats(-6, 6, width=32)))
        if draw(st.integers(0, 7)) == 0:
            row[draw(st.integers(0, 3))] = draw(coordinate)
        points.append(row)
    cell = [draw(st.floats(0, 1, exclude_max=True)) for _ in range(3)]
    return voxel_size, [*lo, *(a + b for a, b in zip(lo, span, strict=True))], points, cell


def expected_grid(voxel_size, point_range):
    """Cells per axis a voxelizer must build (x, y, z), or None when it must refuse the configuration:
    sizes and bounds are taken in float32; every size finite and > 0, every bound finite, every max above
    its min; round(span / size) (spconv's float32 rule, half up) cells per axis, each in [1, 2**31 - 1],
    at most 2**53 in all."""
    with np.errstate(all="ignore"):
        size = np.array(voxel_size, np.float64).astype(np.float32)
        bounds = np.array(point_range, np.float64).astype(np.float32)
        lower, upper = bounds[:3], bounds[3:]
        if not (np.isfinite(size).all() and (size > 0).all() and np.isfinite(bounds).all() and (upper > lower).all()):
            return None
        cells = np.floor((upper - lower) / size + np.float32(0.5))
    if not np.isfinite(cells).all() or (cells < 1).any() or (cells > INT32_MAX).any():
        return None
    return cells.astype(np.int64) if math.prod(int(c) for c in cells) <= 2**53 else None


@FUZZ
@example(case=([0.5, 0.25, 1.0], [-1.0, 0.0, -2.0, 1.0, 1.0, 2.0], [[0.1, 0.3, -1.5, 0.0], [5.0, 0.5, 0.0, 1.0]],
               [0.5, 0.0, 0.9]), hard=True)
@example(case=([0.5, 0.25, 1.0], [-1.0, 0.0, -2.0, 1.0, 1.0, 2.0], [[0.1, 0.3, -1.5, 0.0], [5.0, 0.5, 0.0, 1.0]],
               [0.5, 0.0, 0.9]), hard=False)
@given(case=voxel_case(), hard=st.booleans())
def test_fuzz_voxelizers_equal_float32_reference_or_refuse(case, hard):
    """Hostile voxel sizes, ranges and points: a ConfigError exactly when the configuration is invalid
    (expected_grid), else the expected grid, every kept point in its float32 cell floor((p - min) / size)
    and every other point counted as cropped or non-finite. A non-empty cloud on a valid grid gets a
    point at the centre of a cell first, so every such example compares at least one kept point."""
    voxel_size, point_range, points, cell = case
    grid_size = expected_grid(voxel_size, point_range)
    with np.errstate(over="ignore"):
        pts = np.array(points, np.float32).reshape(-1, 4)
        if grid_size is not None and len(pts):
            size, lower = np.float32(voxel_size), np.float32(point_range[:3])
            index = np.minimum((np.array(cell) * grid_size).astype(np.int64), grid_size - 1)
            pts = np.vstack([np.append(lower + (index + 0.5) * size, 0).astype(np.float32), pts])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy overflow / invalid warnings would mean unchecked arithmetic
        warnings.simplefilter("ignore", NonFinitePointsWarning)  # after "error": the filter added last wins
        try:
            vox = (HardVoxelizer(voxel_size, point_range, 4, 1000) if hard
                   else DynamicVoxelizer(voxel_size, point_range))
        except ConfigError as error:
            event("refused")
            assert grid_size is None, f"valid voxel_size {voxel_size} and range {point_range} refused: {error}"
            return
        assert grid_size is not None, f"invalid voxel_size {voxel_size} or range {point_range} accepted"
        out = vox(pts)
    grid = vox.grid
    np.testing.assert_array_equal(grid.grid_size, grid_size)
    np.testing.assert_array_equal(grid.voxel_size, np.float32(voxel_size))
    np.testing.assert_array_equal(grid.lower, np.float32(point_range[:3]))
    finite = np.isfinite(pts).all(1)
    with np.errstate(all="ignore"):
        cells = np.floor((pts[:, :3] - grid.lower) / grid.voxel_size)
    inside = finite & ((cells >= 0) & (cells < grid.grid_size)).all(1)
    assert out.n_nonfinite == int((~finite).sum()) and out.n_cropped == int((finite & ~inside).sum())
    p2v = out.point_to_voxel if hard else np.where(out.keep, 0, -1)
    if not hard:
        p2v[out.keep] = out.point_to_voxel
    assert ((p2v >= 0) == inside).all()
    if len(pts) == 0:
        event("empty cloud")
        return
    assert inside[0], (pts[0], cells[0])  # the added cell centre: a kept point is compared below
    event("compared")
    got = out.coords[p2v[inside], 1:][:, ::-1]
    np.testing.assert_array_equal(got, cells[inside].astype(np.int64))


@FUZZ
@given(points=st.lists(st.lists(coordinate, min_size=3, max_size=3), min_size=1, max_size=20),
       voxel_size=size_value)
def test_fuzz_grid_sample_fitted_grid(points, voxel_size):
    """grid_sample without a range fits the grid to the finite points: every finite point is kept,
    or the cloud spans more cells than int32 holds and the error names the frame."""
    pts = np.array(points, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonFinitePointsWarning)
        try:
            coords, shape, inverse, keep = grid_sample(pts, voxel_size, frame="scan.bin")
        except ConfigError:
            assert not (0 < voxel_size < 3.4e38) or np.float32(voxel_size) == 0
            return
        except DataFormatError as error:
            assert "scan.bin" in str(error) and ("int32" in str(error) or "float32 resolution" in str(error))
            return
    assert (keep == np.isfinite(pts).all(1)).all()
    assert (coords[:, 1:] < np.array(shape)).all() and (coords >= 0).all()
