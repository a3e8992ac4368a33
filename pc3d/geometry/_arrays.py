"""Input checks, numpy/torch round trips and thread setup shared by the geometry modules."""
from __future__ import annotations

import sys
from typing import Any

import numpy as np
from pc3d_ops.threads import use_threads

from pc3d.errors import ConfigError, DataFormatError


def is_torch(x: Any) -> bool:
    """True for a torch tensor, without importing torch."""
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def to_numpy(x: Any, dtype=None) -> np.ndarray:
    """A numpy view (or copy) of an array-like or a torch tensor (detached, on CPU)."""
    if is_torch(x):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def like(result: np.ndarray, template: Any):
    """`result` as the same kind as `template`: a torch tensor on its device, else numpy."""
    if is_torch(template):
        import torch

        return torch.from_numpy(np.ascontiguousarray(result)).to(template.device)
    return result


def float_dtype(x: np.ndarray) -> np.dtype:
    """float64 stays float64; every other dtype computes and returns float32."""
    return np.dtype(np.float64) if x.dtype == np.float64 else np.dtype(np.float32)


def check_boxes(boxes: Any, name: str = "boxes", min_cols: int = 7) -> np.ndarray:
    """boxes as a C-contiguous numpy array [M, >= min_cols], finite; raises DataFormatError."""
    arr = to_numpy(boxes)
    if arr.ndim != 2 or arr.shape[1] < min_cols:
        raise DataFormatError(None, f"{name} must be [M, {min_cols}+] (x, y, z, dx, dy, dz, heading, ...), "
                                    f"got shape {tuple(arr.shape)}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr).all(1))[0])
        raise DataFormatError(None, f"{name} has NaN or infinite values (first at row {bad})")
    return np.ascontiguousarray(arr)


def check_points(points: Any, name: str = "points", cols: int = 3) -> np.ndarray:
    """points as a numpy array [N, >= cols]; raises DataFormatError on a wrong shape."""
    arr = to_numpy(points)
    if arr.ndim != 2 or arr.shape[1] < cols:
        raise DataFormatError(None, f"{name} must be [N, {cols}+], got shape {tuple(arr.shape)}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
    return arr


def check_positive(value: float, name: str, allow_zero: bool = False) -> float:
    value = float(value)
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} number, got {value}")
    return value


def sync_threads() -> None:
    """Run the numba kernels on as many threads as torch uses (numba's default without torch).

    numba's OpenMP pool shares libgomp with torch and its first launch resets torch's count, so
    the count is restored afterwards; torch is never imported here.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        use_threads(10**6)
        return
    n = torch.get_num_threads()
    use_threads(n)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
