"""Loader cases: ScanNet scenes (ply meshes, labels, aggregation)."""
from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .core import Ctx, case, expect
from .fixtures import edit_lines, loop_link, ply_header_and_body, ply_write, truncate
from .loaders_kitti import _pristine, load_all


def _scannet(root: Path, split="train", **kw):
    from pc3d.data import ScanNetDataset

    return ScanNetDataset(root, split, training=False, **kw)


def _scene(root: Path, suffix="_vh_clean_2.ply", scene="scene0000_00") -> Path:
    return root / "scans" / scene / f"{scene}{suffix}"


def _sn_case(name: str, corrupt: Callable[[Path], object], names, valid=None, legit=False, **kw):
    @case("loaders", name)
    def run(ctx: Ctx):
        root = ctx.copy("scannet")
        corrupt(root)
        return expect(lambda: load_all(_scannet(root, **kw)), names, valid(root) if valid else None, legit)
    return run


def _ply_set_count(path: Path, delta: int):
    header, body = ply_header_and_body(path)
    header = [f"element vertex {int(x.split()[2]) + delta}" if x.startswith("element vertex") else x for x in header]
    ply_write(path, header, body)


def _ply_undercount_both(r: Path):
    _ply_set_count(_scene(r), -10)
    _ply_set_count(_scene(r, "_vh_clean_2.labels.ply"), -10)


def _ply_ascii(path: Path, drop: tuple[str, ...] = ()) -> None:
    from pc3d.data.ply import read_ply_vertices

    names = ("x", "y", "z", "red", "green", "blue")
    v = read_ply_vertices(path, names)
    keep = [n for n in names if n not in drop]
    header = ["ply", "format ascii 1.0", f"element vertex {len(v['x'])}"]
    header += [f"property {'float' if n in 'xyz' else 'uchar'} {n}" for n in keep] + ["end_header"]
    rows = "\n".join(" ".join(f"{v[n][i]:.9g}" if n in "xyz" else str(int(v[n][i])) for n in keep)
                     for i in range(len(v["x"])))
    path.write_text("\n".join(header) + "\n" + rows + "\n")


def _ply_nan(path: Path):
    header, body = ply_header_and_body(path)
    body = bytearray(body)
    body[0:4] = struct.pack("<f", float("nan"))
    ply_write(path, header, bytes(body))


def _ply_label(path: Path, value: int):
    """Set the `label` property of the first 5 vertices of a binary little-endian ply to `value`."""
    header, body = ply_header_and_body(path)
    sizes = {"float": 4, "uchar": 1, "ushort": 2, "int": 4, "uint": 4, "short": 2, "char": 1, "double": 8}
    codes = {"ushort": "<H", "int": "<i", "uint": "<I", "uchar": "<B", "short": "<h"}
    first = next(i for i, h in enumerate(header) if h.startswith("element vertex"))
    props = []
    for h in header[first + 1:]:
        if not h.startswith("property"):
            break
        props.append(h.split()[1:3])
    stride = sum(sizes[t] for t, _ in props)
    k = [n for _, n in props].index("label")
    offset = sum(sizes[t] for t, _ in props[:k])
    body = bytearray(body)
    for i in range(5):
        struct.pack_into(codes[props[k][0]], body, i * stride + offset, value)
    ply_write(path, header, bytes(body))


def _scannet_same_as_pristine(root: Path):
    def check(samples):
        ref = load_all(_scannet(_pristine(root, "scannet")))
        ok = len(samples) == len(ref) and all(
            np.allclose(a["points"], b["points"], atol=1e-5) and np.array_equal(a["point_labels"], b["point_labels"])
            for a, b in zip(samples, ref, strict=True))
        return ok, f"{len(samples)} scenes equal to the binary originals" if ok else "points differ from the original"
    return check


_sn_case("scannet/ply-truncated", lambda r: truncate(_scene(r), 1000), ["scene0000_00_vh_clean_2.ply"])
_sn_case("scannet/ply-header-undercounts-vertices", _ply_undercount_both, ["scene0000_00"])
_sn_case("scannet/ply-header-overcounts-vertices", lambda r: _ply_set_count(_scene(r), 10 ** 6),
         ["scene0000_00_vh_clean_2.ply"])
_sn_case("scannet/ply-bad-magic", lambda r: _scene(r).write_bytes(b"plx" + _scene(r).read_bytes()[3:]),
         ["scene0000_00_vh_clean_2.ply"])
_sn_case("scannet/ply-no-colour-properties", lambda r: _ply_ascii(_scene(r), drop=("red", "green", "blue")),
         ["scene0000_00_vh_clean_2.ply"])
_sn_case("scannet/ply-nan-vertex", lambda r: _ply_nan(_scene(r)), ["scene0000_00_vh_clean_2.ply"])
_sn_case("scannet/ply-zero-bytes", lambda r: _scene(r).write_bytes(b""), ["scene0000_00_vh_clean_2.ply"])
_sn_case("scannet/ply-symlink-loop", lambda r: loop_link(_scene(r)), ["scene0000_00_vh_clean_2.ply"])
_sn_case("scannet/labels-count-mismatch", lambda r: _ply_set_count(_scene(r, "_vh_clean_2.labels.ply"), -3),
         ["labels.ply"])
_sn_case("scannet/labels-missing", lambda r: _scene(r, "_vh_clean_2.labels.ply").unlink(), ["labels.ply"])
_sn_case("scannet/labels-id-999", lambda r: _ply_label(_scene(r, "_vh_clean_2.labels.ply"), 999),
         ["labels.ply", "999"])
_sn_case("scannet/axis-alignment-15-numbers", lambda r: edit_lines(
    _scene(r, ".txt"), lambda lines: [(x.rsplit(" ", 1)[0] if x.startswith("axisAlignment") else x) for x in lines]),
    ["scene0000_00.txt"])
_sn_case("scannet/axis-alignment-nan", lambda r: edit_lines(
    _scene(r, ".txt"), lambda lines: [(x.replace("= ", "= nan ", 1).rsplit(" ", 1)[0]
                                       if x.startswith("axisAlignment") else x) for x in lines]), ["scene0000_00.txt"])
_sn_case("scannet/split-lists-missing-scene", lambda r: (r / "scannetv2_train.txt").write_text(
    "scene0000_00\nscene0099_00\n"), ["scene0099_00"])
_sn_case("scannet/split-duplicate-scene", lambda r: (r / "scannetv2_train.txt").write_text(
    "scene0000_00\nscene0000_00\n"), ["scene0000_00", "scannetv2_train.txt"])
_sn_case("scannet/split-file-missing", lambda r: (r / "scannetv2_train.txt").unlink(), ["scannetv2_train.txt"])
_sn_case("scannet/segs-json-malformed", lambda r: _scene(r, "_vh_clean_2.0.010000.segs.json").write_text("{"),
         ["segs.json"], instances=True)
_sn_case("scannet/aggregation-missing", lambda r: _scene(r, ".aggregation.json").unlink(), ["aggregation.json"],
         instances=True)
_sn_case("scannet/segs-count-mismatch", lambda r: _scene(r, "_vh_clean_2.0.010000.segs.json").write_text(
    json.dumps({"segIndices": [0, 1, 2]})), ["segs.json"], instances=True)
_sn_case("scannet/ply-ascii-legit", lambda r: _ply_ascii(_scene(r)), [], valid=_scannet_same_as_pristine, legit=True)
