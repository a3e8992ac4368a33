"""Loader cases: HPLFlowNet scene-flow pairs (FlyingThings3D and KITTI layouts)."""
from __future__ import annotations

import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .core import Ctx, case, expect
from .fixtures import truncate
from .loaders_kitti import load_all


def _flow(root: Path, variant="flyingthings3d", **kw):
    from pc3d.data import SceneFlowDataset

    return SceneFlowDataset(root, variant, "train", training=False, **kw)


def _pc(root: Path, name="pc1.npy", variant="flyingthings3d") -> Path:
    folder = {"flyingthings3d": "FlyingThings3D_subset_processed_35m/train", "kitti": "KITTI_processed_occ_final"}
    return next(p for p in sorted((root / folder[variant]).iterdir()) if p.is_dir()) / name


def _sf_case(name: str, corrupt: Callable[[Path], object], names, valid=None, legit=False, variant="flyingthings3d",
             **kw):
    @case("loaders", name)
    def run(ctx: Ctx):
        root = ctx.copy("sceneflow")
        frame = _pc(root, variant=variant).parent.name
        corrupt(root)
        return expect(lambda: load_all(_flow(root, variant, **kw)), [*names, frame], valid(root) if valid else None,
                      legit)
    return run


def _npy_edit(path: Path, fn):
    np.save(path, fn(np.load(path)))


_sf_case("sceneflow/pc1-empty", lambda r: (np.save(_pc(r), np.zeros((0, 3), np.float32)),
                                           np.save(_pc(r, "pc2.npy"), np.zeros((0, 3), np.float32))), ["pc1.npy"])
_sf_case("sceneflow/pc1-empty-skip-bad-frames", lambda r: (np.save(_pc(r), np.zeros((0, 3), np.float32)),
                                                           np.save(_pc(r, "pc2.npy"), np.zeros((0, 3), np.float32))),
         ["pc1.npy"], skip_bad_frames=True)
_sf_case("sceneflow/pc2-length-mismatch", lambda r: _npy_edit(_pc(r, "pc2.npy"), lambda a: a[:-5]), ["pc2.npy"])
_sf_case("sceneflow/pc1-nan", lambda r: _npy_edit(_pc(r), lambda a: np.where(np.arange(len(a))[:, None] == 3, np.nan,
                                                                             a).astype(np.float32)), ["pc1.npy"])
_sf_case("sceneflow/pc1-4-columns", lambda r: _npy_edit(_pc(r), lambda a: np.concatenate([a, a[:, :1]], 1)),
         ["pc1.npy"])
_sf_case("sceneflow/pc1-int-dtype", lambda r: _npy_edit(_pc(r), lambda a: a.astype(np.int32)), ["pc1.npy"])
_sf_case("sceneflow/pc1-transposed", lambda r: _npy_edit(_pc(r), lambda a: np.ascontiguousarray(a.T)), ["pc1.npy"])
_sf_case("sceneflow/pc1-pickled-object", lambda r: _pc(r).write_bytes(pickle.dumps({"points": [1, 2, 3]})),
         ["pc1.npy"])
_sf_case("sceneflow/pc1-object-array-npy", lambda r: np.save(_pc(r), np.array([{"a": 1}], dtype=object),
                                                             allow_pickle=True), ["pc1.npy"])
_sf_case("sceneflow/pc1-truncated", lambda r: truncate(_pc(r), 100), ["pc1.npy"])
_sf_case("sceneflow/pc2-missing", lambda r: _pc(r, "pc2.npy").unlink(), ["pc2.npy"])
_sf_case("sceneflow/mask-length-mismatch", lambda r: np.save(_pc(r, "mask.npy"), np.ones(7, bool)), ["mask.npy"])
_sf_case("sceneflow/all-points-beyond-35m", lambda r: (
    _npy_edit(_pc(r), lambda a: (a - [0, 0, 100]).astype(np.float32)),
    _npy_edit(_pc(r, "pc2.npy"), lambda a: (a - [0, 0, 100]).astype(np.float32))), ["pc1.npy", "35"])
_sf_case("sceneflow/variant-folder-missing", lambda r: shutil.rmtree(r / "KITTI_processed_occ_final"),
         ["KITTI_processed_occ_final"], variant="kitti")


@case("loaders", "sceneflow/float64-legit")
def _(ctx):
    root = ctx.copy("sceneflow")
    for name in ("pc1.npy", "pc2.npy"):
        _npy_edit(_pc(root, name), lambda a: a.astype(np.float64))
    ref = load_all(_flow(ctx.fx / "sceneflow", num_points=None))

    def check(samples):
        ok = all(np.allclose(a["flow"], b["flow"], atol=1e-5) for a, b in zip(samples, ref, strict=True))
        return ok, f"{len(samples)} pairs, same flow as float32"
    return expect(lambda: load_all(_flow(root, num_points=None)), [], check, legit=True)
