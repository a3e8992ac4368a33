"""Loader cases: KITTI object detection layout."""
from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .core import Ctx, case, expect
from .fixtures import bin_points, edit_lines, loop_link, make_fifo, truncate


def _kitti(root: Path, split: str = "trainval", **kw):
    from pc3d.data import KittiDataset

    return KittiDataset(root, split, training=False, **kw)


def load_all(dataset) -> list[dict]:
    return [dataset[i] for i in range(len(dataset))]


def _kitti_case(name: str, corrupt: Callable[[Path], object], names, split: str = "trainval", valid=None,
                legit=False, **kw):
    @case("loaders", name)
    def run(ctx: Ctx):
        root = ctx.copy("kitti")
        extra = corrupt(root)
        nm = list(names) + ([extra] if isinstance(extra, str) else [])
        return expect(lambda: load_all(_kitti(root, split, **kw)), nm, valid(root) if valid else None, legit)
    return run


def _label(root: Path, frame: str = "000001") -> Path:
    return root / "training" / "label_2" / f"{frame}.txt"


def _velo(root: Path, frame: str = "000001") -> Path:
    return root / "training" / "velodyne" / f"{frame}.bin"


def _calib(root: Path, frame: str = "000001") -> Path:
    return root / "training" / "calib" / f"{frame}.txt"


def _replace_first_object(path: Path, fn: Callable[[list[str]], list[str]]) -> None:
    def edit(lines):
        for i, line in enumerate(lines):
            f = line.split()
            if f and f[0] != "DontCare":
                lines[i] = " ".join(fn(f))
                break
        return lines
    edit_lines(path, edit)


def _pristine(root: Path, fixture: str) -> Path:
    """The pristine fixture of a case copy <work>/cases/<case>/<fixture>."""
    return root.parents[2] / "fixtures" / fixture


def _boxes_equal_pristine(root: Path):
    def check(samples):
        ref = load_all(_kitti(_pristine(root, "kitti")))
        ok = len(samples) == len(ref) and all(
            np.array_equal(a["gt_boxes"], b["gt_boxes"]) and np.array_equal(a["points"], b["points"])
            for a, b in zip(samples, ref, strict=True))
        return ok, f"{len(samples)} frames, same points and boxes as the pristine copy" if ok else "differs"
    return check


_kitti_case("kitti/bin-truncated", lambda r: truncate(_velo(r), 7), ["000001.bin"])
_kitti_case("kitti/bin-empty-with-labels", lambda r: _velo(r).write_bytes(b""), ["000001"])
_kitti_case("kitti/bin-nan", lambda r: _velo(r).write_bytes(
    np.where(np.arange(bin_points(_velo(r)).size).reshape(-1, 4) % 97 == 0, np.nan,
             bin_points(_velo(r))).astype("<f4").tobytes()), ["000001.bin"])
_kitti_case("kitti/bin-inf", lambda r: _velo(r).write_bytes(
    np.concatenate([bin_points(_velo(r)), [[np.inf, 0, 0, 0]]]).astype("<f4").tobytes()), ["000001.bin"])
_kitti_case("kitti/bin-missing", lambda r: _velo(r).unlink(), ["000001.bin"])
_kitti_case("kitti/bin-is-directory", lambda r: (_velo(r).unlink(), _velo(r).mkdir()), ["000001.bin"])
_kitti_case("kitti/bin-symlink-loop", lambda r: loop_link(_velo(r)), ["000001.bin"])
_kitti_case("kitti/bin-fifo", lambda r: make_fifo(_velo(r)), ["000001.bin"])
_kitti_case("kitti/bin-3-columns", lambda r: _velo(r).write_bytes(
    bin_points(_velo(r))[:1001, :3].astype("<f4").tobytes()), ["000001.bin"])
_kitti_case("kitti/label-missing", lambda r: _label(r).unlink(), ["000001.txt", "label_2"])
_kitti_case("kitti/label-14-fields", lambda r: _replace_first_object(_label(r), lambda f: f[:14]), ["000001.txt"])
_kitti_case("kitti/label-non-numeric", lambda r: _replace_first_object(_label(r), lambda f: f[:8] + ["abc"] + f[9:]),
            ["000001.txt"])
_kitti_case("kitti/label-nan", lambda r: _replace_first_object(_label(r), lambda f: f[:11] + ["nan"] + f[12:]),
            ["000001.txt"])
_kitti_case("kitti/label-unknown-class", lambda r: _replace_first_object(_label(r), lambda f: ["Carr"] + f[1:]),
            ["000001.txt", "Carr"])
_kitti_case("kitti/label-lowercase-class", lambda r: _replace_first_object(_label(r), lambda f: ["car"] + f[1:]),
            ["000001.txt", "'car'"])
_kitti_case("kitti/label-negative-size", lambda r: _replace_first_object(_label(r), lambda f: f[:8] + ["-1.5"] + f[9:]),
            ["000001.txt"])
_kitti_case("kitti/label-zero-size", lambda r: _replace_first_object(
    _label(r), lambda f: f[:8] + ["0", "0", "0"] + f[11:]), ["000001.txt"])
_kitti_case("kitti/label-occluded-9", lambda r: _replace_first_object(_label(r), lambda f: f[:2] + ["9"] + f[3:]),
            ["000001.txt", "occlu"])
_kitti_case("kitti/label-binary-garbage", lambda r: _label(r).write_bytes(bytes(range(256)) * 4), ["000001.txt"])
_kitti_case("kitti/calib-missing", lambda r: _calib(r).unlink(), ["000001.txt", "calib"])
_kitti_case("kitti/calib-empty", lambda r: _calib(r).write_text(""), ["000001.txt"])
_kitti_case("kitti/calib-no-Tr_velo_to_cam", lambda r: edit_lines(
    _calib(r), lambda lines: [x for x in lines if not x.startswith("Tr_velo_to_cam")]), ["000001.txt"])
_kitti_case("kitti/calib-nan", lambda r: edit_lines(
    _calib(r), lambda lines: [x.replace(":", ": nan", 1) if x.startswith("R0_rect") else x for x in lines]),
    ["000001.txt"])
_kitti_case("kitti/calib-11-values", lambda r: edit_lines(
    _calib(r), lambda lines: [" ".join(x.split()[:-1]) if x.startswith("P2") else x for x in lines]), ["000001.txt"])
_kitti_case("kitti/imagesets-duplicate-ids", lambda r: (r / "ImageSets" / "trainval.txt").write_text(
    "000000\n000001\n000001\n000002\n"), ["000001", "trainval.txt"])
_kitti_case("kitti/imagesets-missing-split", lambda r: (r / "ImageSets" / "trainval.txt").unlink(), ["trainval.txt"])
_kitti_case("kitti/imagesets-empty-split", lambda r: (r / "ImageSets" / "val.txt").write_text(""), ["val.txt"],
            split="val")
_kitti_case("kitti/imagesets-unknown-id", lambda r: (r / "ImageSets" / "trainval.txt").write_text(
    "000000\n999999\n"), ["999999"])
_kitti_case("kitti/imagesets-crlf-and-spaces-legit", lambda r: (r / "ImageSets" / "trainval.txt").write_bytes(
    b"000000 \r\n 000001\r\n000002\r\n\r\n"), [], valid=_boxes_equal_pristine, legit=True)
_kitti_case("kitti/image_2-not-a-png", lambda r: (r / "training" / "image_2" / "000001.png").write_bytes(
    b"GIF89a" + b"\0" * 40), ["000001.png"])
_kitti_case("kitti/root-missing", lambda r: shutil.rmtree(r), ["kitti"])


@case("loaders", "kitti/label-empty-legit")
def _(ctx):
    root = ctx.copy("kitti")
    _label(root).write_text("")

    def check(samples):
        s = samples[1]
        ok = s["gt_boxes"].shape == (0, 7) and len(s["points"]) > 0
        return ok, f"frame 000001: {len(s['points'])} points, gt_boxes {s['gt_boxes'].shape}"
    return expect(lambda: load_all(_kitti(root)), [], check, legit=True)


@case("loaders", "kitti/label-with-score-column-legit")
def _(ctx):
    root = ctx.copy("kitti")
    edit_lines(_label(root), lambda lines: [x + " 0.9" for x in lines])
    return expect(lambda: load_all(_kitti(root)), [], _boxes_equal_pristine(root), legit=True)
