"""Input checks of the voxelizers, in one place: configuration values and point clouds.

Bad configuration raises ConfigError; a malformed cloud raises DataFormatError naming the frame.
NaN / inf points are counted and dropped with a NonFinitePointsWarning (nan_policy="warn") or
raise DataFormatError (nan_policy="raise"); they are never dropped silently.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from os import PathLike

import numpy as np

from pc3d.errors import ConfigError, DataFormatError

NAN_POLICIES = ("warn", "raise")
INT32_MAX = 2**31 - 1  # voxel coords are int32
FLOAT32_MIN = float(np.finfo(np.float32).smallest_subnormal)
FLOAT32_MAX = float(np.finfo(np.float32).max)

Frame = str | PathLike | None


class NonFinitePointsWarning(UserWarning):
    """Points with NaN or inf values were dropped from a cloud (the message names the frame)."""


class VoxelLimitWarning(UserWarning):
    """A hard voxelizer kept max_voxels of a cloud's occupied voxels and dropped the rest."""


def check_nan_policy(policy: str) -> str:
    if policy not in NAN_POLICIES:
        raise ConfigError(f"nan_policy must be one of {NAN_POLICIES}, got {policy!r}")
    return policy


def check_sizes(values: float | Sequence[float], ndim: int, name: str) -> np.ndarray:
    """float32 [ndim] strictly positive, finite sizes; a scalar applies to every axis.

    Checked in float32, the precision the cells are computed in (1e-46 is 0 there, 1e39 is inf)."""
    try:
        sizes = np.broadcast_to(np.asarray(values, np.float64), (ndim,))
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{name} must be a number or {ndim} numbers, got {values!r}") from error
    with np.errstate(over="ignore", under="ignore"):
        sizes = sizes.astype(np.float32)
    if not (np.isfinite(sizes).all() and (sizes > 0).all()):
        raise ConfigError(f"{name} must be finite and > 0 on every axis (in float32: {FLOAT32_MIN:.3g} to "
                          f"{FLOAT32_MAX:.3g}), got {values!r}")
    return sizes


def check_range(point_range: Sequence[float], ndim: int, name: str = "point_range") -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) float32 [ndim] of a range given as (min_0, ..., min_D-1, max_0, ..., max_D-1)."""
    try:
        values = np.asarray(point_range, np.float64).reshape(-1)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{name} must be {2 * ndim} numbers, got {point_range!r}") from error
    with np.errstate(over="ignore"):
        values32 = values.astype(np.float32)
    if values.shape != (2 * ndim,) or not np.isfinite(values32).all():
        raise ConfigError(f"{name} must be {2 * ndim} finite float32 numbers (mins then maxes, |v| <= "
                          f"{FLOAT32_MAX:.3g}), got {point_range!r}")
    lower, upper = values32[:ndim], values32[ndim:]
    if not (upper > lower).all():
        raise ConfigError(f"{name}: every max must be > its min, got {point_range!r}")
    return lower, upper


def check_count(value: int, name: str, high: int = INT32_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 1 <= value <= high:
        raise ConfigError(f"{name} must be an int in [1, {high}], got {value!r}")
    return int(value)


def check_batch_index(value: int) -> int:
    """A sample's batch index: an int in [0, 2**31 - 1] (voxel coords are int32)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 0 <= value <= INT32_MAX:
        raise ConfigError(f"batch_index must be an int in [0, {INT32_MAX}], got {value!r}")
    return int(value)


def check_cloud(points, min_columns: int, frame: Frame = None) -> np.ndarray:
    """The cloud as C-contiguous float32 [N, C] (C >= min_columns); float64 input is cast.

    Accepts numpy arrays and CPU torch tensors. Raises DataFormatError naming the frame on a wrong
    type, dtype, rank or too few columns.
    """
    if hasattr(points, "detach") and hasattr(points, "numpy"):
        points = points.detach().cpu().numpy()
    if not isinstance(points, np.ndarray):
        raise DataFormatError(frame, f"points must be a numpy array [N, 3 + C], got {type(points).__name__}")
    if points.dtype not in (np.float32, np.float64):
        raise DataFormatError(frame, f"points must be float32 [N, 3 + C], got dtype {points.dtype}")
    if points.ndim != 2:
        raise DataFormatError(frame, f"points must be 2-D [N, 3 + C], got shape {points.shape}")
    if points.shape[1] < min_columns:
        raise DataFormatError(frame, f"points need at least {min_columns} columns, got shape {points.shape}")
    return np.ascontiguousarray(points, np.float32)


def report_nonfinite(n_nonfinite: int, n_points: int, frame: Frame, policy: str) -> None:
    """Warn about (or raise on) points with NaN / inf values; nothing when there are none."""
    if n_nonfinite == 0:
        return
    problem = f"{n_nonfinite} of {n_points} points have NaN or inf values"
    if policy == "raise":
        raise DataFormatError(frame, problem)
    where = "points" if frame is None else str(frame)
    warnings.warn(f"{where}: {problem}; they were dropped", NonFinitePointsWarning, stacklevel=3)


def check_batch(clouds: Sequence, seeds: Sequence | None, frames: Sequence[Frame] | None) -> list[tuple]:
    """(cloud, seed, frame) of each sample of a batch; None seeds / frames stand for None per sample."""
    if len(clouds) == 0:
        raise DataFormatError(None, "voxelize needs at least one cloud")
    seeds = [None] * len(clouds) if seeds is None else list(seeds)
    frames = [None] * len(clouds) if frames is None else list(frames)
    if not len(seeds) == len(frames) == len(clouds):
        raise DataFormatError(None, f"voxelize: {len(clouds)} clouds, {len(seeds)} seeds, {len(frames)} frames")
    return list(zip(clouds, seeds, frames, strict=True))
