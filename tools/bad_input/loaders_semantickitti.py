"""Loader cases: SemanticKITTI layout."""
from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .core import Ctx, case, expect
from .fixtures import bin_points, edit_lines, truncate
from .loaders_kitti import load_all


def _semkitti(root: Path, **kw):
    from pc3d.data import SemanticKittiDataset

    kw.setdefault("sequences", [0, 1])
    return SemanticKittiDataset(root, kw.pop("split", "train"), training=False, **kw)


def _sk(root: Path, seq="00", kind="velodyne", frame="000001") -> Path:
    ext = {"velodyne": "bin", "labels": "label"}[kind]
    return root / "sequences" / seq / kind / f"{frame}.{ext}"


def _sk_case(name: str, corrupt: Callable[[Path], object], names, valid=None, legit=False, **kw):
    @case("loaders", name)
    def run(ctx: Ctx):
        root = ctx.copy("semantickitti")
        corrupt(root)
        return expect(lambda: load_all(_semkitti(root, **kw)), names, valid(root) if valid else None, legit)
    return run


def _sk_empty(r: Path):
    _sk(r).write_bytes(b"")
    _sk(r, kind="labels").write_bytes(b"")


def _sk_label_ids(r: Path, value: int, rows=slice(0, 5)):
    labels = np.fromfile(_sk(r, kind="labels"), "<u4")
    labels[rows] = value
    labels.astype("<u4").tofile(_sk(r, kind="labels"))


_sk_case("semantickitti/bin-truncated", lambda r: truncate(_sk(r), 5), ["00", "000001.bin"])
_sk_case("semantickitti/bin-nan", lambda r: _sk(r).write_bytes(
    np.concatenate([bin_points(_sk(r)), [[np.nan] * 4]]).astype("<f4").tobytes()), ["000001.bin"])
_sk_case("semantickitti/label-count-mismatch", lambda r: truncate(_sk(r, kind="labels"), 40), ["000001.label"])
_sk_case("semantickitti/label-not-multiple-of-4", lambda r: truncate(_sk(r, kind="labels"), 2), ["000001.label"])
_sk_case("semantickitti/label-missing", lambda r: _sk(r, kind="labels").unlink(), ["000001.label"])
_sk_case("semantickitti/label-unknown-id", lambda r: _sk_label_ids(r, 777), ["000001.label", "777"])
_sk_case("semantickitti/scan-empty", _sk_empty, ["000001"])
_sk_case("semantickitti/split-sequences-partly-missing", lambda r: None, ["05", "missing", "sequence"],
         sequences=[0, 1, 5])
_sk_case("semantickitti/split-train-default-sequences", lambda r: None, ["02", "missing", "sequence"], sequences=None)
_sk_case("semantickitti/all-sequences-missing", lambda r: None, ["08", "sequences"], sequences=[8])
_sk_case("semantickitti/sequence-velodyne-empty", lambda r: [p.unlink() for p in (
    r / "sequences" / "01" / "velodyne").glob("*.bin")], ["01"])
_sk_case("semantickitti/poses-missing-past-scans", lambda r: (r / "sequences" / "00" / "poses.txt").unlink(),
         ["poses.txt"], n_past_scans=1)
_sk_case("semantickitti/poses-11-columns", lambda r: edit_lines(
    r / "sequences" / "00" / "poses.txt", lambda lines: [" ".join(x.split()[:11]) for x in lines]), ["poses.txt"],
    n_past_scans=1)
_sk_case("semantickitti/poses-fewer-than-scans", lambda r: edit_lines(
    r / "sequences" / "00" / "poses.txt", lambda lines: lines[:1]), ["poses.txt"], n_past_scans=1)
_sk_case("semantickitti/poses-nan", lambda r: edit_lines(
    r / "sequences" / "00" / "poses.txt", lambda lines: ["nan " + " ".join(x.split()[1:]) for x in lines]),
    ["poses.txt"], n_past_scans=1)
_sk_case("semantickitti/times-missing", lambda r: (r / "sequences" / "00" / "times.txt").unlink(), ["times.txt"],
         n_past_scans=1)
_sk_case("semantickitti/calib-no-Tr", lambda r: edit_lines(
    r / "sequences" / "00" / "calib.txt", lambda lines: [x for x in lines if not x.startswith("Tr")]), ["calib.txt"],
    n_past_scans=1)
_sk_case("semantickitti/scan-name-not-a-number", lambda r: (shutil.copy(_sk(r), _sk(r, frame="abc")), shutil.copy(
    _sk(r, kind="labels"), _sk(r, kind="labels", frame="abc"))), ["abc"], n_past_scans=1)
_sk_case("semantickitti/mode-bogus", lambda r: None, ["mode", "bogus"], mode="bogus")
_sk_case("semantickitti/learning-map-missing", lambda r: None, ["nope.yaml"], learning_map="/nonexistent/nope.yaml")
_sk_case("semantickitti/sequence-name-not-a-number", lambda r: None, ["x1"], sequences=["x1"])


@case("loaders", "semantickitti/learning-map-malformed")
def _(ctx):
    root = ctx.copy("semantickitti")
    bad = ctx.dir / "bad.yaml"
    bad.write_text("labels: [unclosed\n  learning_map: {")
    return expect(lambda: load_all(_semkitti(root, learning_map=bad)), ["bad.yaml"])


@case("loaders", "semantickitti/mos-mode-legit")
def _(ctx):
    root = ctx.copy("semantickitti")

    def check(samples):
        ok = len(samples) == 4 and all(set(np.unique(s["moving_labels"]).tolist()) <= {-1, 0, 1} for s in samples)
        return ok, f"{len(samples)} scans with moving_labels in -1/0/1"
    return expect(lambda: load_all(_semkitti(root, mode="mos")), [], check, legit=True)
