"""Point files as clouds: .bin / .npy / .npz / .pcd / .ply read into float32 rows with their column names,
checked (dtype, shape, magic, truncation, header against bytes), NaN / inf rows dropped and counted, and
columns matched to a model's features (see pc3d.infer.sources for the column rules). Every failure is a
DataFormatError naming the file."""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pc3d.data.io import NUMPY_FILE_ERRORS
from pc3d.errors import DataFormatError

POINT_EXTS = (".bin", ".npy", ".npz", ".pcd", ".ply")
_MAGIC = {".npy": b"\x93NUMPY", ".npz": b"PK"}
XYZ = ("x", "y", "z")
# spellings of a column in .pcd fields / .ply vertex properties -> pc3d's feature name
_ALIASES = {"red": "r", "green": "g", "blue": "b", "scalar_intensity": "intensity", "reflectance": "intensity",
            "remission": "intensity", "i": "intensity", "t": "time", "timestamp": "time"}


@dataclass
class Cloud:
    """Points as read from a file: float32 [N, C] (finite rows only), the names of columns 3.. when the
    format names them (None: unnamed), the number of rows the file holds and the mask of those kept."""

    points: np.ndarray
    names: tuple[str, ...] | None
    rows: int
    kept: np.ndarray | None = None

    @property
    def dropped(self) -> int:
        return self.rows - len(self.points)


def as_float_rows(array: Any, path: Path) -> np.ndarray:
    """A real floating [N, >= 3] array as float32; DataFormatError naming `path` for any other dtype or shape."""
    if not isinstance(array, np.ndarray):
        raise DataFormatError(path, f"expected a float array of points, got {type(array).__name__}")
    if array.dtype.names:
        raise DataFormatError(path, f"expected a plain float [N, 3+] array, got a structured array with fields "
                                    f"{list(array.dtype.names)}")
    if array.dtype.kind != "f":
        raise DataFormatError(path, f"expected float points (x, y, z, features), got dtype {array.dtype}")
    if array.ndim != 2 or array.shape[1] < 3:
        raise DataFormatError(path, f"expected points [N, 3+] (x, y, z, features), got shape {array.shape}")
    with np.errstate(over="ignore", invalid="ignore"):  # float64 beyond float32 becomes inf: counted below
        return array.astype(np.float32, copy=False)


def finite_rows(points: np.ndarray, path: Path, names: tuple[str, ...] | None = None) -> Cloud:
    """The rows of `points` without NaN / inf (counted in the Cloud); DataFormatError when there is no row
    or none is finite."""
    if len(points) == 0:
        raise DataFormatError(path, "the cloud is empty (0 points)")
    good = np.isfinite(points).all(1)
    if good.all():
        return Cloud(points, names, len(points))
    if not good.any():
        raise DataFormatError(path, f"all {len(points)} points have NaN / inf values")
    return Cloud(points[good], names, len(points), good)


def fit_columns(points: np.ndarray, features: Sequence[str], path: Path | str | None = None,
                names: Sequence[str] | None = None, pad: bool = False) -> np.ndarray:
    """float32 [N, 3 + len(features)]: x, y, z and the model's `features`, from `points` [N, >= 3].

    names: the names of points' columns 3.. when the format gives them (picked by name), else None
    (unnamed: the columns must be exactly the model's). A missing ``time`` column is 0 (a single scan).
    Anything else missing or extra raises a DataFormatError naming `path`, unless `pad` (missing ones 0,
    extra ones dropped).
    """
    features = tuple(features)
    want = (*XYZ, *features)
    out = np.zeros((len(points), len(want)), np.float32)
    out[:, :3] = points[:, :3]
    if names is not None:
        names = tuple(names)
        missing = [f for f in features if f not in names and f != "time"]
        if missing and not pad:
            raise DataFormatError(path, f"no {', '.join(missing)} column (it has {', '.join((*XYZ, *names))}); the "
                                        f"model reads {', '.join(want)} (infer --pad-features fills missing ones "
                                        "with 0)")
        for i, name in enumerate(features):
            if name in names:
                out[:, 3 + i] = points[:, 3 + names.index(name)]
        return out
    have = points.shape[1]
    time_only = have == len(want) - 1 and features[-1:] == ("time",)
    if have != len(want) and not time_only and not pad:
        raise DataFormatError(path, f"{have} values per point, the model reads {len(want)}: {', '.join(want)} "
                                    "(infer --pad-features fills missing ones with 0 and drops extra ones)")
    n = min(have, len(want))
    out[:, 3:n] = points[:, 3:n]
    return out


def read_point_file(path: str | Path, features: Sequence[str] = ("intensity",), pad: bool = False) -> np.ndarray:
    """float32 [N, 3 + len(features)] of a point file (x, y, z, then `features`; see the module docstring).

    .bin: raw float32 rows of 3 + len(features) values; .npy / .npz: a float [N, C] array (the first array of
    an .npz); .pcd (ascii, binary, binary_compressed) and .ply: columns by field name, colours in 0..1. Rows
    with NaN / inf are dropped with one warning giving the count; bad files raise a DataFormatError naming them.
    """
    path = Path(path)
    cloud = read_cloud(path, features, pad)
    if cloud.dropped:
        warnings.warn(f"{path}: dropped {cloud.dropped} of {cloud.rows} points with NaN / inf", stacklevel=2)
    return fit_columns(cloud.points, features, path, cloud.names, pad)


def read_cloud(path: Path, features: Sequence[str] = ("intensity",), pad: bool = False) -> Cloud:
    """The finite rows of a point file with their column names (see read_point_file); DataFormatError naming
    the file when it is not a readable cloud."""
    ext = path.suffix.lower()
    if ext not in POINT_EXTS:
        raise DataFormatError(path, f"unsupported point file type {ext or '(none)'!r}; use one of "
                                    f"{', '.join(POINT_EXTS)}")
    if path.is_dir():
        raise DataFormatError(path, "is a folder, expected a point file")
    if not path.is_file():
        raise DataFormatError(path, "neither a regular file nor a folder (a FIFO or device?)" if path.exists()
                              else "file does not exist")
    if ext == ".bin":
        return finite_rows(_read_bin(path, 3 + len(tuple(features)), tuple(features), pad), path)
    if ext in (".npy", ".npz"):
        with path.open("rb") as f:
            magic = f.read(6)
        if magic[:len(_MAGIC[ext])] != _MAGIC[ext]:
            kind = "an .npz (zip) archive" if ext == ".npz" else "a .npy array"
            raise DataFormatError(path, f"not {kind}: " + ("the file is empty" if not magic else "wrong magic bytes"))
    if ext == ".npy":
        from pc3d.data.io import load_npy

        return finite_rows(as_float_rows(load_npy(path), path), path)
    if ext == ".npz":
        return finite_rows(as_float_rows(_first_npz_array(path), path), path)
    points, names = _read_pcd(path) if ext == ".pcd" else _read_ply(path)
    return finite_rows(points, path, names)


def _read_bin(path: Path, columns: int, features: tuple[str, ...], pad: bool) -> np.ndarray:
    """Raw float32 rows of `columns` values (or one fewer when the last feature is time; with `pad`, KITTI's 4)."""
    size = path.stat().st_size
    if size == 0:
        raise DataFormatError(path, "the cloud is empty (0 bytes)")
    candidates = [columns] + ([columns - 1] if features[-1:] == ("time",) else []) + ([4] if pad else [])
    for width in candidates:
        if size % (4 * width) == 0:
            rows = np.fromfile(path, dtype="<f4").reshape(-1, width)
            # only a width that divides the file and is no multiple of this one can contradict it (no cost otherwise)
            rivals = any(rows.size % w == 0 and w % width for w in range(3, 9))
            looks_like = bin_width(rows.reshape(-1)) if rivals else None
            if looks_like is not None and looks_like % width:
                raise DataFormatError(path, f"read as {width} float32 per point ({', '.join((*XYZ, *features))}), its "
                                            f"rows are not points: the values repeat every {looks_like} (a file of "
                                            f"x, y, z and {looks_like - 3} more values per point?)")
            return rows
    raise DataFormatError(path, f"size {size} bytes is not a multiple of {4 * columns} ({columns} float32 per point: "
                                f"{', '.join((*XYZ, *features))}): truncated, or not this model's columns")


def bin_width(values: np.ndarray, widths: Sequence[int] = range(3, 9), min_rows: int = 512) -> int | None:
    """The number of float32 per point of a headerless cloud's values [M], when the data says so clearly; None
    when it cannot tell (too few points, or no width stands out).

    Rows of the true width hold one point each: every column has the same distribution in row k as in row k + 1.
    Read with another width, a column cycles through the file's columns (x, then r, then z, ...), so its rows
    grouped by k mod p (p = 2..8) differ in mean and spread. A width is plausible when no column's grouped
    means differ by more than 0.3 of its spread and no grouped spreads by more than a factor e^0.3; the answer
    is the smallest plausible width when every other width that divides M is implausible by a wide margin (an
    index above 1; measured: 0.01-0.07 at the true width, 3.4-4.9 at others on KITTI and ScanNet frames).
    """
    def index(width: int) -> float:
        x = values[:width * 16384].reshape(-1, width).astype(np.float64)  # the first 16,384 rows tell
        x = x[np.isfinite(x).all(1)]
        worst = 0.0
        for p in range(2, 9):
            groups = [x[r::p] for r in range(p)]
            means = np.stack([g.mean(0) for g in groups])
            spreads = np.stack([g.std(0) for g in groups]) + 1e-6
            worst = max(worst, float(((means.max(0) - means.min(0)) / (x.std(0) + 1e-12)).max()),
                        float(np.log(spreads.max(0) / spreads.min(0)).max()))
        return worst

    fits = [w for w in widths if values.size % w == 0 and values.size // w >= min_rows]
    if len(fits) < 2:
        return None
    scores = {w: index(w) for w in fits}
    plausible = [w for w in fits if scores[w] < 0.3]
    if not plausible:
        return None
    best = plausible[0]
    others = [w for w in fits if w % best]
    return best if others and all(scores[w] > 1.0 for w in others) else None


def _first_npz_array(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as data:
            if not data.files:
                raise DataFormatError(path, "the .npz file holds no array")
            return data[data.files[0]]
    except DataFormatError:
        raise
    except NUMPY_FILE_ERRORS as exc:
        raise DataFormatError(path, f"not a readable .npz file ({type(exc).__name__}: {exc})") from None


def _named(fields: Sequence[str], columns: dict[str, np.ndarray], path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    """[N, 3 + F] float32 of x, y, z and every other numeric column, with the other columns' pc3d names."""
    missing = [c for c in XYZ if c not in columns]
    if missing:
        raise DataFormatError(path, f"no {', '.join(missing)} field (fields: {', '.join(fields) or 'none'})")
    rest = [f for f in columns if f not in XYZ]
    with np.errstate(over="ignore", invalid="ignore"):
        points = np.stack([np.asarray(columns[f], np.float32) for f in (*XYZ, *rest)], 1)
    return points, tuple(_ALIASES.get(f.lower(), f.lower()) for f in rest)


_PCD_TYPES = {("F", 4): "f4", ("F", 8): "f8", ("U", 1): "u1", ("U", 2): "u2", ("U", 4): "u4", ("U", 8): "u8",
              ("I", 1): "i1", ("I", 2): "i2", ("I", 4): "i4", ("I", 8): "i8"}


def _read_pcd(path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    """Points of a .pcd file (PCL's v0.7 format; ascii, binary, binary_compressed), columns by field name."""
    with path.open("rb") as f:
        raw = f.read()
    header: dict[str, list[str]] = {}
    offset = 0
    while "DATA" not in header:
        end = raw.find(b"\n", offset)
        if end < 0 or offset > 65536:
            raise DataFormatError(path, "not a .pcd file: no 'DATA' line in the header")
        line = raw[offset:end].decode("ascii", "replace").strip()
        offset = end + 1
        if line and not line.startswith("#"):
            key, *values = line.split()
            header[key.upper()] = values
    try:
        fields = header["FIELDS"]
        sizes = [int(v) for v in header["SIZE"]]
        types = [v.upper() for v in header["TYPE"]]
        counts = [int(v) for v in header.get("COUNT", ["1"] * len(fields))]
        n = int(header["POINTS"][0]) if "POINTS" in header else int(header["WIDTH"][0]) * int(header["HEIGHT"][0])
        dtype = np.dtype([(f"{name}_{k}", "<" + _PCD_TYPES[(t, s)], (c,)) for k, (name, t, s, c)
                          in enumerate(zip(fields, types, sizes, counts, strict=True))])
    except (KeyError, IndexError, ValueError) as exc:
        raise DataFormatError(path, f"bad .pcd header ({type(exc).__name__}: {exc}; header: {header})") from None
    if n < 0:
        raise DataFormatError(path, f"bad .pcd header: POINTS {n}")
    mode = header["DATA"][0].lower() if header["DATA"] else ""
    if mode == "ascii":
        values = raw[offset:].split()
        width = sum(counts)
        if len(values) < n * width:
            raise DataFormatError(path, f"truncated: the header declares {n} points of {width} values, the file "
                                        f"holds {len(values)} values")
        try:
            table = np.array(values[:n * width], dtype=np.float64).reshape(n, width)
        except ValueError as exc:
            raise DataFormatError(path, f"non-numeric value in the ascii data ({exc})") from None
        starts = np.cumsum([0, *counts])
        columns = {f: table[:, starts[k]] for k, f in enumerate(fields)}
    elif mode == "binary":
        if len(raw) - offset < n * dtype.itemsize:
            raise DataFormatError(path, f"truncated: the header declares {n} points of {dtype.itemsize} bytes, the "
                                        f"file holds {len(raw) - offset} bytes of data")
        block = np.frombuffer(raw, dtype, count=n, offset=offset)
        columns = {f: block[f"{f}_{k}"][:, 0] for k, f in enumerate(fields)}
    elif mode == "binary_compressed":
        return _read_pcd_open3d(path, n)
    else:
        raise DataFormatError(path, f"unknown .pcd DATA mode {mode!r} (ascii, binary or binary_compressed)")
    if "rgb" in columns or "rgba" in columns:  # PCL packs 8-bit r, g, b into one 4-byte field
        key = "rgb" if "rgb" in columns else "rgba"
        packed = np.ascontiguousarray(columns.pop(key), np.float32 if mode == "ascii" else None)
        packed = packed.view(np.uint32) if packed.dtype.itemsize == 4 else packed.astype(np.uint32)
        for name, shift in (("r", 16), ("g", 8), ("b", 0)):
            columns[name] = ((packed >> shift) & 0xFF) / 255.0
    columns = {f: c for f, c in columns.items() if f != "_"}  # PCL's padding fields
    return _named(fields, columns, path)


def _read_pcd_open3d(path: Path, declared: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """A binary_compressed .pcd through Open3D's tensor reader (LZF); the count checked against the header."""
    import open3d as o3d

    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
    cloud = o3d.t.io.read_point_cloud(str(path))
    attributes = dict(cloud.point.items()) if "positions" in cloud.point else {}
    if "positions" not in attributes or len(attributes["positions"]) != declared:
        found = len(attributes["positions"]) if "positions" in attributes else 0
        raise DataFormatError(path, f"unreadable binary_compressed data: the header declares {declared} points, "
                                    f"{found} decoded (truncated or corrupt)")
    xyz = attributes.pop("positions").numpy()
    columns = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}
    if "colors" in attributes:
        rgb = attributes.pop("colors").numpy().astype(np.float64)
        rgb = rgb / 255.0 if rgb.max(initial=0) > 1 else rgb
        columns.update(r=rgb[:, 0], g=rgb[:, 1], b=rgb[:, 2])
    for name, value in attributes.items():
        value = value.numpy()
        if value.ndim == 2 and value.shape[1] == 1 and value.dtype.kind in "fiu":
            columns[name] = value[:, 0]
    return _named(list(columns), columns, path)


def _read_ply(path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    """Vertices of a .ply file (any format plyfile reads), columns by property name; uchar colours in 0..1."""
    from pc3d.data.ply import read_ply_vertices

    with path.open("rb") as f:
        head = f.read(1 << 16)
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        raise DataFormatError(path, "not a .ply file (no 'ply' magic or no 'end_header')")
    properties, in_vertex = [], False
    for line in head[:end].decode("ascii", "replace").splitlines():
        words = line.split()
        if words[:1] == ["element"]:
            in_vertex = words[1:2] == ["vertex"]
        elif words[:1] == ["property"] and in_vertex and len(words) == 3:
            properties.append(words[2])
    if not properties:
        raise DataFormatError(path, "the .ply header has no vertex element with scalar properties")
    columns = read_ply_vertices(path, tuple(properties))
    for name in ("red", "green", "blue"):
        if name in columns and columns[name].dtype == np.uint8:
            columns[name] = columns[name] / 255.0
    return _named(properties, columns, path)
