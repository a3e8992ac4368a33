"""Checked readers of the raw files pc3d loads: every malformed input raises DataFormatError naming the file."""
from __future__ import annotations

import tokenize
import zipfile
import zlib
from os import PathLike
from pathlib import Path

import numpy as np

from pc3d.errors import DataFormatError

# What np.load of a damaged .npy / .npz raises besides its own ValueError: the header parser's errors, and
# zipfile's for a bad archive, an unsupported zip version or compression method (NotImplementedError) or an
# encrypted member (RuntimeError), and zlib's for a bad deflate stream.
NUMPY_FILE_ERRORS = (ValueError, OSError, EOFError, KeyError, SyntaxError, tokenize.TokenError, zipfile.BadZipFile,
                     zlib.error, NotImplementedError, RuntimeError)


def _size(path: Path) -> int:
    if not path.is_file():
        raise DataFormatError(path, "file does not exist")
    return path.stat().st_size


def read_bin(path: str | PathLike, columns: int = 4) -> np.ndarray:
    """float32 [N, columns] of a raw little-endian float32 point file (KITTI / SemanticKITTI velodyne).

    Raises DataFormatError on a missing file, a size that is not a multiple of 4 * columns bytes
    (a truncated file) or NaN / inf values.
    """
    path = Path(path)
    size = _size(path)
    row = 4 * columns
    if size % row:
        raise DataFormatError(path, f"size {size} bytes is not a multiple of {row} ({columns} float32 per point): "
                                    "truncated or not a point file")
    points = np.fromfile(path, dtype="<f4").reshape(-1, columns)
    check_finite(points, path)
    return points.astype(np.float32, copy=False)


def read_label(path: str | PathLike, count: int) -> np.ndarray:
    """uint32 [count] of a SemanticKITTI .label file; DataFormatError when it holds another count."""
    path = Path(path)
    size = _size(path)
    if size % 4 or size // 4 != count:
        raise DataFormatError(path, f"{size} bytes = {size / 4:g} labels, expected {count} (one uint32 per point)")
    return np.fromfile(path, dtype="<u4")


def load_npy(path: str | PathLike) -> np.ndarray:
    """np.load of a .npy file without pickles; a corrupt header or body raises DataFormatError."""
    path = Path(path)
    _size(path)
    try:  # numpy parses the header with ast / tokenize: a corrupt one raises their errors
        return np.load(path, allow_pickle=False)
    except NUMPY_FILE_ERRORS as error:
        raise DataFormatError(path, f"not a readable .npy array ({error})") from None


def read_npy(path: str | PathLike, columns: int | None = None) -> np.ndarray:
    """A float32 [N, columns] .npy array (no pickled objects), checked for shape and finite values."""
    path = Path(path)
    array = load_npy(path)
    if not isinstance(array, np.ndarray) or array.dtype.kind != "f" or array.ndim != 2 or (
            columns is not None and array.shape[1] != columns):
        raise DataFormatError(path, f"expected float [N, {columns or 'C'}], got {getattr(array, 'dtype', '?')} "
                                    f"{getattr(array, 'shape', '?')}")
    check_finite(array, path)
    return array.astype(np.float32, copy=False)


def check_finite(points: np.ndarray, where: str | PathLike | None) -> None:
    """DataFormatError naming `where` when points hold NaN or inf values."""
    bad = ~np.isfinite(points)
    if bad.any():
        rows = int(bad.reshape(len(points), -1).any(1).sum()) if points.ndim > 1 else int(bad.sum())
        raise DataFormatError(where, f"{rows} of {len(points)} points have NaN or inf values")


def read_lines(path: str | PathLike) -> list[str]:
    """Non-empty stripped lines of a text file; DataFormatError when missing or not text."""
    return [line for _, line in numbered_lines(path)]


def numbered_lines(path: str | PathLike) -> list[tuple[int, str]]:
    """(1-based line number, stripped line) of the non-empty lines of a text file, for messages that
    name the line; DataFormatError when missing or not text."""
    path = Path(path)
    _size(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise DataFormatError(path, "not a text file") from None
    return [(k + 1, line.strip()) for k, line in enumerate(text.splitlines()) if line.strip()]


def read_ids(path: str | PathLike, allow_empty: bool = False) -> list[str]:
    """The ids of a split / list file (KITTI ImageSets, ScanNet scannetv2_*.txt), one per line, in order.

    DataFormatError naming the file for a line that is not one id, an id listed twice (a duplicated
    frame would be trained and counted twice, and multiply the GT database) or, unless allow_empty,
    a file that lists no id."""
    path = Path(path)
    first: dict[str, int] = {}
    for number, line in numbered_lines(path):
        if len(line.split()) != 1:
            raise DataFormatError(path, f"line {number}: expected one id per line, got {line[:60]!r}")
        if line in first:
            raise DataFormatError(path, f"line {number}: id {line!r} is listed twice (first on line {first[line]})")
        first[line] = number
    if not first and not allow_empty:
        raise DataFormatError(path, "lists no frame id (one id per line expected)")
    return list(first)


def read_int_lines(path: str | PathLike) -> np.ndarray:
    """int64 [L] of a text file of one integer per line (a ScanNet benchmark prediction)."""
    path = Path(path)
    values = []
    for number, line in numbered_lines(path):
        try:
            values.append(int(line))
        except ValueError:
            raise DataFormatError(path, f"line {number}: expected one integer, got {line[:60]!r}") from None
    return np.asarray(values, np.int64)


def read_matrix_lines(path: str | PathLike, columns: int) -> np.ndarray:
    """float64 [L, columns] of a whitespace-separated numeric text file (poses.txt, times.txt)."""
    path = Path(path)
    rows = []
    for number, line in numbered_lines(path):
        try:
            values = [float(v) for v in line.split()]
        except ValueError:
            raise DataFormatError(path, f"line {number}: non-numeric value") from None
        if len(values) != columns:
            raise DataFormatError(path, f"line {number}: expected {columns} values, got {len(values)}")
        rows.append(values)
    out = np.asarray(rows, np.float64).reshape(-1, columns)
    check_finite(out, path)
    return out


def png_size(path: str | PathLike) -> tuple[int, int] | None:
    """(height, width) from a PNG header, or None when the file is absent or not a PNG."""
    path = Path(path)
    if not path.is_file():
        return None
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    return height, width
