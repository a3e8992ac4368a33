"""A tiny PNG writer (8-bit RGB, zlib) for headless output without an imaging library."""
from __future__ import annotations

import struct
import zlib
from os import PathLike
from pathlib import Path

import numpy as np

from pc3d.sim.writers._png import _chunk


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an RGB image uint8 [H, W, 3]."""
    img = np.ascontiguousarray(image, np.uint8)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {img.shape}")
    h, w, _ = img.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), img.reshape(h, 3 * w)], 1).tobytes()
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 6))
            + _chunk(b"IEND", b""))


def write_png(path: str | PathLike, image: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(image))
    return path


def read_png_size(path: str | PathLike) -> tuple[int, int]:
    """(height, width) from a PNG header."""
    data = Path(path).read_bytes()[16:24]
    w, h = struct.unpack(">II", data)
    return h, w
