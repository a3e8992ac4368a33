"""Tool cases: tools/*.py and `python -m pc3d` as subprocesses (each pays a torch / hydra import)."""
from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .core import ROOT, Capture, Ctx, case, judge_cli, main_case, run_cli
from .fixtures import truncate
from .inference import _folder_of, _good_points, _write_bytes, _write_npy
from .loaders_create_data import _empty_dir, _kitti_one_truncated
from .loaders_kitti import _label, _replace_first_object, _velo


def _cli_case(name: str, tool: str, args: Callable[[Ctx], list[str]], names=(), valid=None, legit=False,
              area="tools", env=None):
    @case(area, name, kind="cli")
    def run(ctx: Ctx):
        argv = args(ctx)
        script = ["-m", "pc3d"] if tool == "pc3d" else [str(ROOT / "tools" / f"{tool}.py")]
        rc, out, err = run_cli(ctx, [*script, *argv], env=env)
        nm = list(names(ctx) if callable(names) else names)
        return judge_cli(tool, rc, out, err, nm, (lambda: valid(ctx)) if valid else None, legit)
    return run


def _train(*overrides, exp="toy"):
    def args(ctx):
        return [f"experiment={exp}", f"output_dir={ctx.dir / 'runs'}", "train.tensorboard=false", *overrides]
    return args


def _no_run_folder(ctx) -> tuple[bool, str]:
    runs = ctx.dir / "runs"
    found = [p for p in runs.rglob("*") if p.is_file()] if runs.exists() else []
    return not found, f"{len(found)} files under output_dir"


def _train_case(name, overrides, names, exp="toy", legit=False, upfront=True):
    """upfront: the error is in the command line (a value, a path), so it must come before the run folder is
    written (a bad frame found while training may come after)."""
    @case("tools", name, kind="cli")
    def run(ctx: Ctx):
        argv = _train(*(overrides(ctx) if callable(overrides) else overrides), exp=exp)(ctx)
        rc, out, err = run_cli(ctx, [str(ROOT / "tools" / "train.py"), *argv])
        outcome, msg = judge_cli("train", rc, out, err, names, lambda: (False, "exit 0 for a bad value"), legit)
        clean, files = _no_run_folder(ctx)
        if outcome == "OK-error" and not clean and upfront:
            return "FAIL-exit", f"{msg} (but a run folder was written first: {files})"
        return outcome, msg
    return run


_SIMK = "centerpoint_sim_kitti"


def _simk(ctx, *more):
    return [f"dataset.root={ctx.fx / 'kitti'}", "train.workers=0", "train.max_epochs=null", "train.max_iters=1",
            "train.batch_size=1", "splits.val=null", *more]


_train_case("train/max_epochs-abc", ["train.max_epochs=abc"], ["train.max_epochs"])
_train_case("train/batch_size-negative", ["train.batch_size=-4"], ["train.batch_size"])
_train_case("train/batch_size-zero", ["train.batch_size=0"], ["train.batch_size"])
_train_case("train/lr-nan", ["optim.lr=nan"], ["optim.lr", "lr"])
_train_case("train/lr-negative", ["optim.lr=-1"], ["optim.lr", "lr"])
_train_case("train/max_epochs-and-max_iters", ["train.max_iters=3"], ["max_epochs", "max_iters"])
_train_case("train/precision-fp8", ["train.precision=fp8"], ["train.precision", "fp8"])
_train_case("train/keep_last-zero", ["train.keep_last=0"], ["train.keep_last"])
_train_case("train/workers-negative", ["train.workers=-1"], ["train.workers"])
_train_case("train/seed-abc", ["seed=abc"], ["seed"])
_train_case("train/device-tpu", ["device=tpu"], ["device", "tpu"])
_train_case("train/ema_decay-1.5", ["train.ema_decay=1.5"], ["train.ema_decay"])
_train_case("train/best_mode-median", ["train.best_mode=median"], ["best_mode", "median"])
_train_case("train/threads-negative", ["threads=-3"], ["threads"])
_train_case("train/resume-nonexistent", ["resume=/nonexistent/x.pt"], ["/nonexistent/x.pt"])
_train_case("train/resume-zero-byte", lambda c: [f"resume={(c.dir / 'z.pt').write_bytes(b'') or c.dir / 'z.pt'}"],
            ["z.pt"])
_train_case("train/unknown-experiment", [], ["nonexistent_exp"], exp="nonexistent_exp")
_train_case("train/unknown-key", ["foo.bar=1"], ["foo"])
_train_case("train/dataset-root-missing", lambda c: [*_simk(c), f"dataset.root={c.dir / 'nope'}"], ["nope"],
            exp=_SIMK)
_train_case("train/dataset-root-empty-folder", lambda c: [*_simk(c), f"dataset.root={_empty_dir(c)}"],
            ["empty"], exp=_SIMK)
_train_case("train/voxel_size-zero", lambda c: [*_simk(c), "dataset.voxel_size=[0,0,0]"], ["voxel_size"], exp=_SIMK)
_train_case("train/point_cloud_range-inverted", lambda c: [*_simk(c), "dataset.point_cloud_range=[0,0,0,-1,-1,-1]"],
            ["point_cloud_range", "point_range"], exp=_SIMK)
def _kitti_train_all_one_truncated(ctx: Ctx) -> Path:
    root = ctx.copy("kitti")
    (root / "ImageSets" / "train.txt").write_text("000000\n000001\n000002\n")
    from pc3d.data.create import create_data

    with Capture():
        create_data("kitti", root)  # the recipe samples from the GT database: build it while the frame is good
    truncate(_velo(root, "000001"), 3)
    return root


_train_case("train/dataset-truncated-bin", lambda c: [
    *_simk(c), f"dataset.root={_kitti_train_all_one_truncated(c)}", "train.max_iters=null", "train.max_epochs=1"],
    ["000001"], exp=_SIMK, upfront=False)


def _toy_run_dir(ctx):
    return ctx.fx / "toy_run"


_cli_case("test/run_dir-nonexistent", "test", lambda c: [f"run_dir={c.dir / 'norun'}"], ["norun"])
_cli_case("test/ckpt-zero-byte", "test", lambda c: [f"ckpt={(c.dir / 'z.pt').write_bytes(b'') or c.dir / 'z.pt'}"],
          ["z.pt"])
_cli_case("test/ckpt-random-bytes", "test", lambda c: [f"ckpt={_write_bytes(c, 'r.pt', os.urandom(999))}"], ["r.pt"])
_cli_case("test/ckpt-pickled-object", "test", lambda c: [f"ckpt={_write_bytes(c, 'p.pt', pickle.dumps([1, 2]))}"],
          ["p.pt"])
_cli_case("test/ckpt-is-empty-dir", "test", lambda c: [f"ckpt={_empty_dir(c)}"], ["empty"])
_cli_case("test/run_dir-is-a-file", "test", lambda c: [f"run_dir={_write_bytes(c, 'f.txt', b'x')}"], ["f.txt"])
_cli_case("test/split-bogus", "test", lambda c: [f"run_dir={c.fx / 'ckpt' / _SIMK}", "split=bogus",
                                                 f"out_dir={c.dir / 'o'}"], ["bogus"])
_cli_case("test/dataset_root-missing", "test", lambda c: [f"run_dir={c.fx / 'ckpt' / _SIMK}",
                                                          f"dataset_root={c.dir / 'gone'}", f"out_dir={c.dir / 'o'}"],
          ["gone"])
_cli_case("test/dataset-truncated-bin", "test", lambda c: [
    f"run_dir={c.fx / 'ckpt' / _SIMK}", f"dataset_root={_kitti_one_truncated(c)}", "split=train",
    f"out_dir={c.dir / 'o'}"], ["000000"])
_cli_case("test/batch_size-negative", "test", lambda c: [f"run_dir={_toy_run_dir(c)}", "batch_size=-1",
                                                         f"out_dir={c.dir / 'o'}"], ["batch_size"])
_cli_case("test/toy-run-legit", "test", lambda c: [f"run_dir={_toy_run_dir(c)}", f"out_dir={c.dir / 'o'}"], [],
          valid=lambda c: ((c.dir / "o" / "metrics.json").is_file(), "metrics.json written"), legit=True)
_cli_case("infer/cli-empty-bin", "infer", lambda c: [str(c.det), str(_write_bytes(c, "e.bin", b"")),
                                                     "--out", str(c.dir / "o")], ["e.bin"])
_cli_case("infer/cli-nan-npy-warns", "infer", lambda c: [str(c.det), str(_write_npy(c, "n.npy", np.where(
    (np.arange(400) % 40 == 0)[:, None], np.nan, _good_points(c, 400)).astype(np.float32))), "--out", str(c.dir / "o")],
          ["10"])
_cli_case("infer/cli-max-frames-abc", "infer", lambda c: [str(c.det), "x.bin", "--max-frames", "abc"],
          ["--max-frames"])
_cli_case("infer/cli-random-ckpt", "infer", lambda c: [str(_write_bytes(c, "r.pt", os.urandom(500))),
                                                       str(c.fx / "kitti" / "training" / "velodyne" / "000000.bin"),
                                                       "--out", str(c.dir / "o")], ["r.pt"])
_cli_case("infer/cli-folder-bad-frame", "infer", lambda c: [str(c.det), str(_folder_of(c, 2, {"000009.bin": b"\0"})),
                                                            "--out", str(c.dir / "o")], ["000009"])
_cli_case("simulate/frames-negative", "simulate", lambda c: ["frames=-3", f"out={c.dir / 's'}"], ["frames"])
_cli_case("simulate/frames-abc", "simulate", lambda c: ["frames=abc", f"out={c.dir / 's'}"], ["frames"])
_cli_case("simulate/format-bogus", "simulate", lambda c: ["format=bogus", f"out={c.dir / 's'}"], ["bogus"])
_cli_case("simulate/out-is-a-file", "simulate", lambda c: ["frames=1", f"out={_write_bytes(c, 'f', b'x')}"], ["f"])
_cli_case("simulate/columns-zero", "simulate", lambda c: ["frames=1", "columns=0", f"out={c.dir / 's'}"], ["columns"])
_cli_case("simulate/density-negative", "simulate", lambda c: ["frames=1", "density=-1", f"out={c.dir / 's'}"],
          ["density"])
_cli_case("simulate/compare-nonexistent", "simulate", lambda c: ["--compare", str(c.dir / "none.bin")], ["none.bin"])
_cli_case("simulate/compare-truncated", "simulate", lambda c: [
    "--compare", str(_write_bytes(c, "t.bin", _good_points(c, 100).tobytes()[:-5])), "--frames", "1"], ["t.bin"])
_cli_case("pc3d/unknown-command", "pc3d", lambda c: ["bogus"], ["info", "bogus"])
_cli_case("bench/unknown-suite", "bench", lambda c: ["bogus"], ["suite", "bogus"])


@case("tools", "visualize/nonexistent-source")
def _(ctx):
    return main_case("visualize", [str(ctx.dir / "missing.bin"), "--out", str(ctx.dir / "o"), "--mode", "bev"],
                     ["missing.bin"])


@case("tools", "visualize/empty-bin")
def _(ctx):
    return main_case("visualize", [str(_write_bytes(ctx, "e.bin", b"")), "--out", str(ctx.dir / "o"), "--mode", "bev"],
                     ["e.bin"])


@case("tools", "visualize/pred-json-malformed")
def _(ctx):
    d = _folder_of(ctx, 1)
    pred = ctx.dir / "pred" / "seq"
    pred.mkdir(parents=True)
    (pred / "000000.json").write_text("{broken")
    return main_case("visualize", [str(d), "--pred", str(ctx.dir / "pred"), "--out", str(ctx.dir / "o"), "--mode",
                                   "bev"], ["000000.json"])


@case("tools", "visualize/pred-json-missing-keys")
def _(ctx):
    d = _folder_of(ctx, 1)
    pred = ctx.dir / "pred" / "seq"
    pred.mkdir(parents=True)
    (pred / "000000.json").write_text(json.dumps({"boxes": [[0, 0, 0, 1, 1, 1]]}))
    return main_case("visualize", [str(d), "--pred", str(ctx.dir / "pred"), "--out", str(ctx.dir / "o"), "--mode",
                                   "bev"], ["000000.json"])


@case("tools", "visualize/pred-dir-nonexistent")
def _(ctx):
    d = _folder_of(ctx, 1)
    return main_case("visualize", [str(d), "--pred", str(ctx.dir / "nopred"), "--out", str(ctx.dir / "o"), "--mode",
                                   "bev"], ["nopred"])


@case("tools", "visualize/kitti-label-malformed")
def _(ctx):
    root = ctx.copy("kitti")
    _replace_first_object(_label(root, "000001"), lambda f: f[:10])
    return main_case("visualize", [str(root), "--out", str(ctx.dir / "o"), "--mode", "bev"], ["000001.txt"])


@case("tools", "create_data/unknown-dataset")
def _(ctx):
    return main_case("create_data", ["bogus", str(ctx.dir)], ["bogus", "dataset"])
