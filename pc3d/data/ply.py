"""PLY meshes as ScanNet ships them: vertex properties, triangles and vertex normals.

Binary files whose first element is the vertex element (ScanNet's meshes and label meshes, the simulator's) are
read with numpy alone, the faces checked against the vertex count; anything else goes through plyfile. Every
unreadable or inconsistent file is a DataFormatError naming it.
"""
from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np

from pc3d.errors import DataFormatError

_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


def _ply_header(path: Path) -> tuple[str, list[tuple[str, int, list]], int] | None:
    """(format, elements [(name, count, properties)], offset of the body) of a ply file; None when the
    header is not one pc3d parses (plyfile reports what is wrong). A property is (name, numpy code) or,
    for a list, (name, (count code, item code))."""
    with path.open("rb") as f:
        head = f.read(1 << 16)
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        return None
    body = end + len(b"end_header") + (2 if head[end + 10:end + 12] == b"\r\n" else 1)
    fmt, elements = None, []
    for line in head[:end].decode("ascii", "replace").splitlines()[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        try:
            if words[0] == "format":
                fmt = words[1]
            elif words[0] == "element":
                elements.append((words[1], int(words[2]), []))
            elif words[0] == "property" and words[1] == "list":
                elements[-1][2].append((words[4], (_PLY_TYPES[words[2]], _PLY_TYPES[words[3]])))
            elif words[0] == "property":
                elements[-1][2].append((words[2], _PLY_TYPES[words[1]]))
        except (IndexError, KeyError, ValueError):
            return None  # plyfile reports what is wrong with the header
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian") or not elements:
        return None
    if min(count for _, count, _ in elements) < 0:
        raise DataFormatError(path, "negative element count in the header")
    return fmt, elements, body


def _element_bytes(path: Path, order: str, offset: int, count: int, props: list, vertices: int) -> int | None:
    """Bytes taken by `count` rows of an element at `offset`: fixed rows, or rows of one list whose length is
    read from the file (constant lengths checked at once, others row by row); None for other layouts. A list
    of vertex indices must index the `vertices` read before it: a header that under-counts vertices shifts
    the faces into vertex bytes, and a walk over those can, by chance, still end where the file does."""
    lists = [k for k, (_, code) in enumerate(props) if isinstance(code, tuple)]
    fixed = sum(np.dtype(code).itemsize for _, code in props if not isinstance(code, tuple))
    if not lists or not count:
        return count * fixed
    if len(props) > 1:
        return None
    len_code, item_code = props[lists[0]][1]
    len_dtype, item = np.dtype(order + len_code), np.dtype(item_code).itemsize
    size = path.stat().st_size
    if offset + len_dtype.itemsize > size:
        return size + 1  # the caller reports the file as too short
    first = int(np.fromfile(path, len_dtype, count=1, offset=offset)[0])
    row = len_dtype.itemsize + max(first, 0) * item
    indices = props[lists[0]][0] in ("vertex_indices", "vertex_index") and np.dtype(item_code).kind in "iu"
    if first >= 0 and offset + count * row <= size:
        rows = np.memmap(path, np.uint8, "r", offset, (count, row))
        lengths = np.ascontiguousarray(rows[:, :len_dtype.itemsize]).view(len_dtype).reshape(-1)
        if (lengths == first).all():
            if indices and first:
                values = np.ascontiguousarray(rows[:, len_dtype.itemsize:]).view(order + item_code)
                if values.min() < 0 or values.max() >= vertices:
                    raise DataFormatError(path, f"face vertex indices outside [0, {vertices}): the header's vertex "
                                                "count does not match the vertices in the file")
            return count * row
    data = np.memmap(path, np.uint8, "r")
    position = offset
    for _ in range(count):
        if position + len_dtype.itemsize > size:
            return size + 1
        length = int(data[position:position + len_dtype.itemsize].view(len_dtype)[0])
        if indices and length > 0:
            start = position + len_dtype.itemsize
            stop = start + min(length, max(size - start, 0) // item) * item  # whole items inside the file
            values = np.asarray(data[start:stop]).view(order + item_code)
            if len(values) and (values.min() < 0 or values.max() >= vertices):
                raise DataFormatError(path, f"face vertex indices outside [0, {vertices}): the header's vertex "
                                            "count does not match the vertices in the file")
        position += len_dtype.itemsize + length * item
    return position - offset


def _vertex_block(path: Path) -> np.ndarray | None:
    """The vertex element of a binary ply whose first element is 'vertex' with scalar properties, read
    straight into a structured array (faces are skipped, but their bytes are counted: the file must end
    where the header says); None for any other layout."""
    header = _ply_header(path)
    if header is None or header[0] == "ascii":
        return None
    fmt, elements, body = header
    name, count, props = elements[0]
    if name != "vertex" or not props or any(isinstance(code, tuple) for _, code in props):
        return None
    order = "<" if fmt == "binary_little_endian" else ">"
    dtype = np.dtype([(prop, order + code) for prop, code in props])
    size = path.stat().st_size
    end = body + count * dtype.itemsize
    if size < end:
        raise DataFormatError(path, f"truncated: {count} vertices of {dtype.itemsize} bytes do not fit the file")
    for _, rows, other_props in elements[1:]:
        taken = _element_bytes(path, order, end, rows, other_props, count)
        if taken is None:
            return None
        end += taken
    _check_extent(path, elements, end - body, size - body)
    return np.fromfile(path, dtype, count=count, offset=body)


def _check_extent(path: Path, elements, expected: int, found: int, unit: str = "bytes") -> None:
    """DataFormatError when the body holds more or fewer bytes (ascii: lines) than the header's counts need."""
    if expected != found:
        counts = ", ".join(f"{rows} {name}" for name, rows, _ in elements)
        raise DataFormatError(path, f"the header's element counts ({counts}) need {expected} {unit} of data, the "
                                    f"file has {found}: a wrong vertex count or a truncated file")


def _check_plyfile_extent(path: Path, ply) -> None:
    """What plyfile read covers the file exactly (plyfile ignores rows after the counted ones)."""
    header = _ply_header(path)
    if header is None:  # a header only plyfile understands: nothing to compare with
        return
    fmt, elements, body = header
    data = path.read_bytes()[body:]
    if fmt == "ascii":
        _check_extent(path, elements, sum(rows for _, rows, _ in elements),
                      sum(1 for line in data.splitlines() if line.strip()), "lines")
        return
    expected = 0
    for element in ply.elements:
        for prop in element.properties:
            if hasattr(prop, "len_dtype"):
                items = sum(len(v) for v in element.data[prop.name])
                expected += (element.count * np.dtype(prop.len_dtype).itemsize
                             + items * np.dtype(prop.val_dtype).itemsize)
            else:
                expected += element.count * np.dtype(prop.dtype()).itemsize
    _check_extent(path, elements, expected, len(data))


def read_ply_vertices(path: str | PathLike, fields: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The named vertex properties of a ply file; DataFormatError naming the file when unreadable, missing one,
    or holding more or fewer rows than its header counts.

    Binary files with the vertex element first (ScanNet's meshes and label meshes) are read with numpy
    alone, skipping the faces; anything else goes through plyfile."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "file does not exist")
    try:
        block = _vertex_block(path)
        if block is not None:
            names = list(block.dtype.names)
            columns = {f: block[f] for f in fields if f in names}
        else:
            from plyfile import PlyData

            ply = PlyData.read(str(path))
            _check_plyfile_extent(path, ply)
            vertex = ply["vertex"]
            names = [p.name for p in vertex.properties]
            columns = {f: np.asarray(vertex[f]) for f in fields if f in names}
        missing = [f for f in fields if f not in names]
        if missing:
            raise DataFormatError(path, f"vertex element lacks {missing} (has {names})")
        return {f: np.ascontiguousarray(columns[f]).astype(columns[f].dtype.newbyteorder("="), copy=False)
                for f in fields}
    except DataFormatError:
        raise
    except Exception as error:  # plyfile raises PlyParseError, ValueError, KeyError, EOFError ... on bad bytes
        raise DataFormatError(path, f"not a readable ply mesh ({type(error).__name__}: {error})") from None


def read_ply_faces(path: str | PathLike, num_vertices: int) -> np.ndarray:
    """int64 [F, 3]: the triangles of a ply mesh (its face element's vertex indices); DataFormatError naming the
    file when it has no face element, a face is not a triangle or an index is outside [0, num_vertices).
    ScanNet's layout (binary, the vertex element first, faces as uchar counts of int indices) is read with numpy
    alone; anything else goes through plyfile."""
    path = Path(path)
    header = _ply_header(path)
    faces = None
    if header is not None and header[0] != "ascii" and len(header[1]) >= 2:
        fmt, elements, body = header
        (vname, vcount, vprops), (fname, fcount, fprops) = elements[:2]
        order = "<" if fmt == "binary_little_endian" else ">"
        if (vname == "vertex" and fname == "face" and len(fprops) == 1 and isinstance(fprops[0][1], tuple)
                and not any(isinstance(code, tuple) for _, code in vprops)):
            len_code, item_code = fprops[0][1]
            row = np.dtype([("n", order + len_code), ("v", order + item_code, (3,))])
            offset = body + vcount * np.dtype([(n, order + c) for n, c in vprops]).itemsize
            if offset + fcount * row.itemsize <= path.stat().st_size:
                block = np.fromfile(path, row, count=fcount, offset=offset)
                if (block["n"] == 3).all():
                    faces = block["v"].astype(np.int64)
    if faces is None:
        try:
            from plyfile import PlyData

            lists = PlyData.read(str(path))["face"].data["vertex_indices"]
        except Exception as error:  # plyfile raises KeyError, PlyParseError, ValueError ... on bad bytes
            raise DataFormatError(path, f"no readable face element ({type(error).__name__}: {error})") from None
        if any(len(f) != 3 for f in lists):
            raise DataFormatError(path, "faces must be triangles to compute normals")
        faces = np.asarray([np.asarray(f, np.int64) for f in lists], np.int64).reshape(-1, 3)
    if len(faces) and (faces.min() < 0 or faces.max() >= num_vertices):
        raise DataFormatError(path, f"face vertex indices outside [0, {num_vertices})")
    return faces


def vertex_normals(xyz: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """float32 [N, 3]: each vertex's unit normal, the sum of its triangles' cross products (area-weighted; the
    triangles' winding gives the side), 0 for a vertex of no triangle."""
    xyz = np.asarray(xyz, np.float64)
    a, b, c = (xyz[faces[:, k]] for k in range(3))
    cross = np.cross(b - a, c - a)
    out = np.stack([sum(np.bincount(faces[:, k], cross[:, j], minlength=len(xyz)) for k in range(3))
                    for j in range(3)], 1)
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, norm, out=np.zeros_like(out), where=norm > 0).astype(np.float32)
