"""Loader cases driven through tools/create_data.py main(argv), in-process."""
from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from .core import Ctx, case, main_case
from .fixtures import truncate
from .loaders_kitti import _velo


def _cd_case(name: str, dataset: str, prepare: Callable[[Ctx], Path], names, valid=None, legit=False):
    @case("loaders", name)
    def run(ctx: Ctx):
        root = prepare(ctx)
        return main_case("create_data", [dataset, str(root)], names, (lambda: valid(root)) if valid else None, legit)
    return run


def _empty_dir(ctx: Ctx) -> Path:
    d = ctx.dir / "empty"
    d.mkdir()
    return d


def _kitti_dup_ids(ctx: Ctx) -> Path:
    root = ctx.copy("kitti")
    (root / "ImageSets" / "train.txt").write_text("000000\n000000\n")
    return root


def _kitti_one_truncated(ctx: Ctx) -> Path:
    root = ctx.copy("kitti")
    truncate(_velo(root, "000000"), 3)
    return root


for _ds in ("kitti", "semantickitti", "waymo", "scannet", "sceneflow"):
    _cd_case(f"create_data/{_ds}-empty-folder", _ds, _empty_dir, ["empty"])
_cd_case("create_data/kitti-duplicate-train-ids", "kitti", _kitti_dup_ids, ["000000", "train.txt"])
_cd_case("create_data/kitti-one-truncated-bin", "kitti", _kitti_one_truncated, ["000000"])
_cd_case("create_data/kitti-root-is-a-file", "kitti", lambda ctx: Path(shutil.copy(
    ctx.fx / "kitti" / "ImageSets" / "train.txt", ctx.dir / "train.txt")), ["train.txt"])
