"""Limits of the sparse engine, checked once, up front.

Coordinates are int32 and kernel maps linearise (batch, *grid) into int64 keys, so:

- every spatial extent and coordinate is in [0, 2**31 - 1] (INT32_MAX);
- a grid's key space, batch_size x prod(extents), is below 2**63 (KEY_LIMIT); a submanifold map
  pads every axis by the kernel's reach, a strided map keys its output grid, and each checks its
  own key space before any kernel runs (a key that wrapped would give wrong neighbours);
- kernel size, stride and dilation are >= 1, padding and output padding >= 0.

A SparseTensor checks its coordinates once when it is built (one min / max reduction over the
coordinates, no per-conv cost); tensors made by the engine itself (conv outputs, pruning) are
valid by construction and skip it.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from pc3d.errors import ConfigError, SparseTensorError

INT32_MAX = 2**31 - 1
KEY_LIMIT = 2**63  # keys are int64 in [0, KEY_LIMIT)

# the smallest allowed value of each conv / pool parameter
LOWER_BOUNDS = {"kernel_size": 1, "stride": 1, "dilation": 1, "padding": 0, "output_padding": 0}
# kernel offsets per conv: a neighbour table has a column per offset (sparse nets use 27 to a few
# thousand); a larger kernel would only exhaust memory (weights, tables) deep inside the engine
MAX_KERNEL_VOLUME = 2**16


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def int_tuple(value, ndim: int, name: str, low: int | None = None, high: int = INT32_MAX,
              error: type[Exception] = ConfigError) -> tuple[int, ...]:
    """`value` (an int or `ndim` ints) as a tuple of ndim ints in [low, high]; `error` otherwise.

    low defaults to LOWER_BOUNDS[name] (0 for unknown names). Floats, bools and strings are refused
    rather than truncated.
    """
    low = LOWER_BOUNDS.get(name, 0) if low is None else low
    items = [value] if _is_int(value) else None
    if items is None and not isinstance(value, str | bytes):
        try:
            items = list(value)
        except TypeError:
            items = None
    if items is None or not all(_is_int(v) for v in items):
        raise error(f"{name} must be an int or {ndim} ints, got {value!r}")
    if len(items) == 1 and _is_int(value):
        items = items * ndim
    if len(items) != ndim:
        raise error(f"{name} must be an int or {ndim} ints, got {value!r}")
    out = tuple(int(v) for v in items)
    if not all(low <= v <= high for v in out):
        raise error(f"{name} must be in [{low}, {high}] on every axis, got {value!r}")
    if name == "kernel_size" and math.prod(out) > MAX_KERNEL_VOLUME:
        raise error(f"kernel_size {out} has {math.prod(out)} offsets, more than the engine's "
                    f"{MAX_KERNEL_VOLUME} (MAX_KERNEL_VOLUME)")
    return out


def check_channels(in_channels, out_channels, groups) -> None:
    """ConfigError unless the channel counts and groups are positive ints and groups divides both."""
    for name, v in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
        if not _is_int(v) or not 1 <= v <= INT32_MAX:
            raise ConfigError(f"{name} must be an int in [1, {INT32_MAX}], got {v!r}")
    if in_channels % groups or out_channels % groups:
        raise ConfigError(f"groups={groups} must divide in_channels={in_channels} and "
                          f"out_channels={out_channels}")


def key_space(extents: Sequence[int]) -> int:
    """Exact number of keys of a grid (a Python int: no float rounding, no overflow)."""
    return math.prod(int(e) for e in extents)


def check_key_space(extents: Sequence[int], what: str, hint: str = "a coarser grid or a smaller batch") -> int:
    """The key space of `extents` ((batch, *axes)); SparseTensorError if it does not fit int64."""
    size = key_space(extents)
    if size >= KEY_LIMIT:
        raise SparseTensorError(
            f"{what}: batch x grid extents {tuple(int(e) for e in extents)} = {size} keys (2**"
            f"{math.log2(size):.1f}) do not fit int64 keys (at most 2**63 - 1); use {hint}")
    return size


def check_grid(spatial_shape, batch_size) -> tuple[tuple[int, ...], int]:
    """(spatial_shape, batch_size) of a SparseTensor as ints, checked against the engine's limits."""
    if _is_int(spatial_shape) or isinstance(spatial_shape, str | bytes):
        raise SparseTensorError(f"SparseTensor: spatial_shape must be a sequence of 1 to 4 ints, got "
                                f"{spatial_shape!r}")
    try:
        ndim = len(spatial_shape)
    except TypeError:
        raise SparseTensorError(f"SparseTensor: spatial_shape must be a sequence of 1 to 4 ints, got "
                                f"{spatial_shape!r}") from None
    if ndim not in (1, 2, 3, 4):
        raise SparseTensorError(f"SparseTensor: spatial_shape must have 1 to 4 dims, got {spatial_shape!r}")
    if isinstance(spatial_shape, torch.Tensor):
        spatial_shape = spatial_shape.tolist()
    shape = int_tuple(spatial_shape, ndim, "SparseTensor: spatial_shape", low=1, error=SparseTensorError)
    if isinstance(batch_size, torch.Tensor) and batch_size.numel() == 1:
        batch_size = batch_size.item()
    if not _is_int(batch_size) or not 1 <= batch_size <= INT32_MAX:
        raise SparseTensorError(f"SparseTensor: batch_size must be an int in [1, {INT32_MAX}], got {batch_size!r}")
    batch_size = int(batch_size)
    check_key_space((batch_size, *shape), "SparseTensor")
    return shape, batch_size


def check_coords(coords: torch.Tensor, spatial_shape: tuple[int, ...], batch_size: int) -> torch.Tensor:
    """int32 contiguous coords [N, 1 + D] after checking them in their own dtype.

    Integer dtypes only; every batch index in [0, batch_size) and every grid index in
    [0, spatial_shape[a]). The range is checked before the cast to int32, so an int64 coordinate
    beyond int32 is refused instead of wrapping. One min / max reduction on the valid path.
    """
    ndim = len(spatial_shape)
    if coords.dtype.is_floating_point or coords.dtype.is_complex or coords.dtype == torch.bool:
        raise SparseTensorError(f"SparseTensor: coords must be integers (int32), got {coords.dtype}")
    if coords.ndim != 2 or coords.shape[1] != ndim + 1:
        raise SparseTensorError(f"SparseTensor: coords must be [N, {ndim + 1}] (batch first) for a "
                                f"{ndim}-D grid, got {tuple(coords.shape)}")
    if len(coords):
        upper = (batch_size, *spatial_shape)
        # amin / amax, not aminmax(dim=0): that one is 10-30x slower on [N, 4] here (torch 2.x CPU)
        low, high = coords.amin(0).tolist(), coords.amax(0).tolist()
        if min(low) < 0 or any(h >= u for h, u in zip(high, upper, strict=True)):
            bad = ((coords < 0) | (coords.to(torch.int64) >= torch.tensor(upper, device=coords.device))).any(1)
            row = int(bad.nonzero()[0, 0])
            axes = ["batch", *(f"axis {a}" for a in range(ndim))]
            ranges = ", ".join(f"{name} [0, {u - 1}]" for name, u in zip(axes, upper, strict=True))
            raise SparseTensorError(
                f"SparseTensor: {int(bad.sum())} coordinates lie outside batch_size {batch_size} x "
                f"spatial_shape {tuple(spatial_shape)} (allowed: {ranges}); first: row {row} = "
                f"{coords[row].tolist()}")
    if coords.dtype != torch.int32:
        coords = coords.to(torch.int32)
    return coords.contiguous()
