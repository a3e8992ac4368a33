"""Inference cases: the readers of tools/infer.py through its main(argv), in-process."""
from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .core import Ctx, case, main_case
from .fixtures import bin_points, loop_link, ply_vertex_count, truncate
from .loaders_kitti import _calib, _velo
from .loaders_scannet import _scene
from .loaders_semantickitti import _sk
from .loaders_waymo import _lidar_field, _w_zero_rows, _wc


def _infer(ctx: Ctx, source, *extra, ckpt=None, names=(), valid=None, legit=False):
    out = ctx.dir / "out"
    argv = [str(ckpt or ctx.det), str(source), "--out", str(out), "--device", "cpu", *extra]
    return main_case("infer", argv, list(names), (lambda: valid(out)) if valid else None, legit)


def _good_points(ctx: Ctx, n=None) -> np.ndarray:
    pts = bin_points(ctx.fx / "kitti" / "training" / "velodyne" / "000000.bin")
    return pts if n is None else pts[:n]


def _outputs(out: Path, pattern: str) -> list[Path]:
    return sorted(out.rglob(pattern))


def _infer_file_case(name: str, make: Callable[[Ctx], Path], names, valid=None, legit=False, extra=()):
    @case("inference", name)
    def run(ctx: Ctx):
        path = make(ctx)
        return _infer(ctx, path, *extra, names=[*names] if extra else [*names, path.name], valid=valid, legit=legit)
    return run


def _write_bin(ctx, name, pts) -> Path:
    p = ctx.dir / name
    np.asarray(pts, "<f4").tofile(p)
    return p


def _write_npy(ctx, name, arr, **kw) -> Path:
    p = ctx.dir / name
    np.save(p, arr, **kw)
    return p


def _write_bytes(ctx, name, data: bytes) -> Path:
    p = ctx.dir / name
    p.write_bytes(data)
    return p


def _n_json(n):
    def check(out: Path):
        found = [p for p in _outputs(out, "*.json") if p.name != "predictions.json"]  # not the folder's manifest
        return len(found) == n, f"{len(found)} json prediction files (expected {n})"
    return check


_infer_file_case("infer/bin-empty", lambda c: _write_bytes(c, "empty.bin", b""), [])
_infer_file_case("infer/bin-truncated", lambda c: _write_bytes(c, "cut.bin", _good_points(c, 500).tobytes()[:-3]), [])
_infer_file_case("infer/npy-some-nan-rows", lambda c: _write_npy(c, "somenan.npy", np.where(
    (np.arange(500) % 50 == 0)[:, None], np.nan, _good_points(c, 500)).astype(np.float32)), ["10"])
_infer_file_case("infer/npy-all-nan", lambda c: _write_npy(c, "allnan.npy", np.full((50, 4), np.nan, np.float32)), [])
_infer_file_case("infer/npy-1d", lambda c: _write_npy(c, "flat.npy", _good_points(c, 100).reshape(-1)), [])
_infer_file_case("infer/npy-2-columns", lambda c: _write_npy(c, "two.npy", _good_points(c, 100)[:, :2]), [])
_infer_file_case("infer/npy-pickled-object", lambda c: _write_npy(c, "obj.npy", np.array([{"x": 1}], dtype=object),
                                                                  allow_pickle=True), [])
_infer_file_case("infer/npy-empty-0x4", lambda c: _write_npy(c, "zero.npy", np.zeros((0, 4), np.float32)), [])
_infer_file_case("infer/npy-string-dtype", lambda c: _write_npy(c, "str.npy", np.array([["a", "b", "c"]])), [])
_infer_file_case("infer/npz-no-arrays", lambda c: _write_bytes(c, "none.npz", _npz_bytes({})), [])
_infer_file_case("infer/npz-corrupt", lambda c: _write_bytes(c, "bad.npz", b"PK\x03\x04" + os.urandom(200)), [])
_infer_file_case("infer/ply-bad-header", lambda c: _write_bytes(c, "bad.ply", b"ply\nformat ascii 1.0\nelement vertex "
                                                                              b"abc\nend_header\n1 2 3\n"), [])
_ZERO_PLY = (b"ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\nproperty float z\n"
             b"end_header\n")
_infer_file_case("infer/ply-zero-vertices", lambda c: _write_bytes(c, "zero.ply", _ZERO_PLY), [])
_infer_file_case("infer/pcd-garbage", lambda c: _write_bytes(c, "junk.pcd", os.urandom(512)), [])
_infer_file_case("infer/unknown-extension", lambda c: _write_bytes(c, "cloud.xyz", b"1 2 3\n"), [])
_infer_file_case("infer/nonexistent-file", lambda c: c.dir / "missing.bin", [])
_infer_file_case("infer/bin-fifo", lambda c: (os.mkfifo(c.dir / "pipe.bin"), c.dir / "pipe.bin")[1], [])
_infer_file_case("infer/max-frames-negative", lambda c: _folder_of(c, 3), ["max-frames", "max_frames"],
                 extra=("--max-frames", "-1"))
_infer_file_case("infer/device-bogus", lambda c: _write_bin(c, "ok.bin", _good_points(c, 2000)), ["bogus", "device"],
                 extra=("--device", "bogus"))


def _npz_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _folder_of(ctx: Ctx, n: int, bad: dict | None = None) -> Path:
    folder = ctx.dir / "seq"
    folder.mkdir(exist_ok=True)
    pts = _good_points(ctx)
    for i in range(n):
        np.asarray(pts[i * 3000:(i + 1) * 3000], "<f4").tofile(folder / f"{i:06d}.bin")
    for name, data in (bad or {}).items():
        if data is None:
            loop_link(folder / name)
        else:
            (folder / name).write_bytes(data)
    return folder


def _write_pcd(path: Path, pts: np.ndarray) -> None:
    head = (f"# .PCD v0.7\nVERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH {len(pts)}\n"
            f"HEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {len(pts)}\nDATA ascii\n")
    path.write_text(head + "\n".join(f"{x:.6f} {y:.6f} {z:.6f}" for x, y, z in pts[:, :3]) + "\n")


@case("inference", "infer/pcd-xyz-for-intensity-model")
def _(ctx):
    p = ctx.dir / "cloud.pcd"
    _write_pcd(p, _good_points(ctx, 3000))
    return _infer(ctx, p, names=["cloud.pcd"])


@case("inference", "infer/pcd-xyz-pad-features-legit")
def _(ctx):
    p = ctx.dir / "cloud.pcd"
    _write_pcd(p, _good_points(ctx, 3000))
    return _infer(ctx, p, "--pad-features", names=[], valid=_n_json(1), legit=True)


@case("inference", "infer/npy-xyz-only-for-intensity-model")
def _(ctx):
    p = _write_npy(ctx, "xyz.npy", _good_points(ctx, 3000)[:, :3])
    return _infer(ctx, p, names=["xyz.npy"])


@case("inference", "infer/npy-int-dtype")
def _(ctx):
    p = _write_npy(ctx, "ints.npy", np.round(_good_points(ctx, 3000)).astype(np.int32))
    return _infer(ctx, p, names=["ints.npy"], valid=_n_json(1))


@case("inference", "infer/npy-float64-legit")
def _(ctx):
    p = _write_npy(ctx, "f64.npy", _good_points(ctx, 3000).astype(np.float64))
    return _infer(ctx, p, names=[], valid=_n_json(1), legit=True)


@case("inference", "infer/scannet-scene-into-lidar-model")
def _(ctx):
    root = ctx.copy("scannet")
    return _infer(ctx, root / "scans" / "scene0000_00", ckpt=ctx.seg, names=["scene0000_00"])


@case("inference", "infer/single-point-legit")
def _(ctx):
    p = _write_bin(ctx, "one.bin", [[10.0, 0.0, -1.0, 0.5]])
    return _infer(ctx, p, names=[], valid=_n_json(1), legit=True)


@case("inference", "infer/folder-no-point-files")
def _(ctx):
    d = ctx.dir / "nothing"
    d.mkdir()
    (d / "readme.txt").write_text("hi")
    return _infer(ctx, d, names=["nothing"])


@case("inference", "infer/folder-one-bad-frame")
def _(ctx):
    d = _folder_of(ctx, 3, {"000001.bin": b"\0" * 7})
    return _infer(ctx, d, names=["000001"], valid=None)


@case("inference", "infer/folder-one-bad-frame-strict")
def _(ctx):
    d = _folder_of(ctx, 3, {"000001.bin": b"\0" * 7})
    return _infer(ctx, d, "--strict", names=["000001"])


@case("inference", "infer/folder-all-frames-bad")
def _(ctx):
    d = _folder_of(ctx, 0, {"000000.bin": b"", "000001.bin": b"\0" * 5})
    return _infer(ctx, d, names=["seq", "000000", "000001"])


@case("inference", "infer/folder-symlink-loop-frame")
def _(ctx):
    d = _folder_of(ctx, 2, {"000005.bin": None})
    return _infer(ctx, d, names=["000005"])


@case("inference", "infer/folder-empty-frame-among-good")
def _(ctx):
    d = _folder_of(ctx, 3, {"000001.bin": b""})
    return _infer(ctx, d, names=["000001"])


@case("inference", "infer/kitti-root-calib-missing")
def _(ctx):
    root = ctx.copy("kitti")
    _calib(root, "000002").unlink()
    return _infer(ctx, root, names=["000002"])


@case("inference", "infer/kitti-root-empty-velodyne-frame")
def _(ctx):
    root = ctx.copy("kitti")
    _velo(root, "000002").write_bytes(b"")
    return _infer(ctx, root, names=["000002"])


@case("inference", "infer/kitti-root-unknown-split")
def _(ctx):
    root = ctx.copy("kitti")
    return _infer(ctx, root, "--split", "bogus", names=["bogus"])


@case("inference", "infer/kitti-root-split-lists-missing-frame")
def _(ctx):
    root = ctx.copy("kitti")
    (root / "ImageSets" / "val.txt").write_text("000001\n000777\n")
    return _infer(ctx, root, names=["000777"])


@case("inference", "infer/semantickitti-sequence-truncated-scan")
def _(ctx):
    root = ctx.copy("semantickitti")
    truncate(_sk(root, "00", frame="000000"), 3)
    return _infer(ctx, root / "sequences" / "00", ckpt=ctx.seg, names=["000000"])


@case("inference", "infer/semantickitti-sequence-no-scans")
def _(ctx):
    root = ctx.copy("semantickitti")
    for p in (root / "sequences" / "00" / "velodyne").glob("*.bin"):
        p.unlink()
    return _infer(ctx, root / "sequences" / "00", ckpt=ctx.seg, names=["00"])


@case("inference", "infer/semantickitti-root-not-sequence")
def _(ctx):
    root = ctx.copy("semantickitti")
    return _infer(ctx, root, ckpt=ctx.seg, names=["semantickitti", "sequence"])


@case("inference", "infer/semantickitti-sequence-legit")
def _(ctx):
    root = ctx.copy("semantickitti")
    seq = root / "sequences" / "01"

    def check(out: Path):
        labels = sorted(out.rglob("*.label"))
        sizes = [np.fromfile(p, "<u4").size for p in labels]
        want = [(seq / "velodyne" / p.name.replace(".label", ".bin")).stat().st_size // 16 for p in labels]
        return len(labels) == 2 and sizes == want, f"{len(labels)} label files, counts {sizes} vs scans {want}"
    return _infer(ctx, seq, ckpt=ctx.seg, names=[], valid=check, legit=True)


@case("inference", "infer/waymo-segment-calibration-missing")
def _(ctx):
    root = ctx.copy("waymo")
    _wc(root, "lidar_calibration").unlink()
    return _infer(ctx, _wc(root, "lidar"), names=["lidar_calibration"])


@case("inference", "infer/waymo-segment-zero-rows")
def _(ctx):
    root = ctx.copy("waymo")
    _w_zero_rows(root, "lidar", 1)
    return _infer(ctx, _wc(root, "lidar"), names=[_wc(root, "lidar").stem])


@case("inference", "infer/waymo-segment-one-frame-nan")
def _(ctx):
    root = ctx.copy("waymo")
    _lidar_field(root, "range_image_return1.values", lambda i, x: [float("nan")] + x[1:] if i == 1 else x)
    return _infer(ctx, _wc(root, "lidar"), names=["lidar"])


@case("inference", "infer/waymo-split-folder-legit")
def _(ctx):
    root = ctx.copy("waymo")
    return _infer(ctx, root / "validation", names=[], valid=_n_json(2), legit=True)


@case("inference", "infer/scannet-scene-truncated-ply")
def _(ctx):
    root = ctx.copy("scannet")
    truncate(_scene(root), 999)
    return _infer(ctx, root / "scans" / "scene0000_00", ckpt=ctx.indoor, names=["scene0000_00_vh_clean_2.ply"])


@case("inference", "infer/scannet-scene-legit")
def _(ctx):
    root = ctx.copy("scannet")
    n = ply_vertex_count(_scene(root))

    def check(out: Path):
        files = [p for p in out.rglob("*") if p.is_file() and p.suffix in (".npy", ".txt", ".label")
                 and "scene0000_00" in p.name]
        counts = [len(np.load(p)) if p.suffix == ".npy" else
                  (len(p.read_text().split()) if p.suffix == ".txt" else np.fromfile(p, "<u4").size) for p in files]
        return n in counts, f"labels per point {counts} for {n} vertices"
    return _infer(ctx, root / "scans" / "scene0000_00", ckpt=ctx.indoor, names=[], valid=check, legit=True)


@case("inference", "infer/ckpt-run-folder-without-checkpoints")
def _(ctx):
    run = ctx.dir / "run"
    (run / "checkpoints").mkdir(parents=True)
    return _infer(ctx, ctx.fx / "kitti" / "training" / "velodyne" / "000000.bin", ckpt=run, names=["run"])


@case("inference", "infer/ckpt-is-a-point-file")
def _(ctx):
    bin_path = ctx.fx / "kitti" / "training" / "velodyne" / "000000.bin"
    return _infer(ctx, bin_path, ckpt=bin_path, names=["000000.bin"])
