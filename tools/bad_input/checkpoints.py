"""Checkpoint cases: pc3d.engine.runner.load_trained, as tools/test.py and tools/infer.py load them."""
from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .core import ROOT, Ctx, case, expect, judge_cli, run_cli


def _load_trained(path: Path):
    from pc3d.engine.runner import load_trained

    return load_trained(path)


def _ck_case(name: str, make: Callable[[Ctx], Path], names=(), valid=None, legit=False):
    @case("checkpoints", name)
    def run(ctx: Ctx):
        path = make(ctx)
        return expect(lambda: _load_trained(path), [*names, path.name], valid, legit)
    return run


def _ck_bytes(data: bytes | Callable[[Ctx], bytes]):
    def make(ctx):
        p = ctx.dir / "model.pt"
        p.write_bytes(data(ctx) if callable(data) else data)
        return p
    return make


def _ck_dict(edit: Callable[[dict, Ctx], dict]):
    def make(ctx):
        import torch

        ckpt = torch.load(ctx.det, weights_only=True)
        p = ctx.dir / "model.pt"
        torch.save(edit(ckpt, ctx), p)
        return p
    return make


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {tempfile.gettempdir()}/pc3d_probe_pwned",))


def _seg_weights(ck, ctx):
    import torch

    ck["model"] = torch.load(ctx.seg, weights_only=True)["model"]
    return ck


def _shape_mismatch(ck, ctx):
    key = next(k for k, v in ck["model"].items() if v.ndim >= 2)
    ck["model"][key] = ck["model"][key][..., :1].clone()
    return ck


def _nan_weights(ck, ctx):
    key = next(k for k, v in ck["model"].items() if v.is_floating_point() and v.ndim >= 2)
    ck["model"][key] = ck["model"][key].clone().fill_(float("nan"))
    return ck


_ck_case("ckpt/zero-byte", _ck_bytes(b""))
_ck_case("ckpt/truncated-half", _ck_bytes(lambda c: c.det.read_bytes()[: c.det.stat().st_size // 2]))
_ck_case("ckpt/random-bytes", _ck_bytes(lambda c: os.urandom(4096)))
_ck_case("ckpt/json-renamed", _ck_bytes(json.dumps({"format": "pc3d-checkpoint"}).encode()))
_ck_case("ckpt/pickled-plain-object", _ck_bytes(pickle.dumps({"format": "pc3d-checkpoint", "model": {1, 2}})))
_ck_case("ckpt/other-model-weights", _ck_dict(_seg_weights), ["model", "state_dict", "weights", "key"])
_ck_case("ckpt/weight-shape-mismatch", _ck_dict(_shape_mismatch), ["shape", "size"])
_ck_case("ckpt/missing-weight-key", _ck_dict(lambda ck, c: {**ck, "model": dict(list(ck["model"].items())[1:])}),
         ["missing", "key"])
_ck_case("ckpt/no-config", _ck_dict(lambda ck, c: {k: v for k, v in ck.items() if k != "config"}), ["config"])
_ck_case("ckpt/config-is-a-string", _ck_dict(lambda ck, c: {**ck, "config": "abc"}), ["config"])
_ck_case("ckpt/config-unknown-target", _ck_dict(lambda ck, c: {**ck, "config": {
    **ck["config"], "model": {**ck["config"]["model"], "_target_": "pc3d.models.NoSuchModel"}}}),
    ["NoSuchModel", "_target_"])
_ck_case("ckpt/version-99", _ck_dict(lambda ck, c: {**ck, "version": 99}), ["99", "version"])
_ck_case("ckpt/bare-state-dict", _ck_dict(lambda ck, c: ck["model"]))
_ck_case("ckpt/model-is-a-list", _ck_dict(lambda ck, c: {**ck, "model": [1, 2, 3]}), ["model"])
_ck_case("ckpt/nan-weights", _ck_dict(_nan_weights), ["NaN", "nan"])
_ck_case("ckpt/directory-not-file", lambda c: (c.dir / "model.pt").mkdir() or c.dir / "model.pt")


@case("checkpoints", "ckpt/malicious-pickle-not-executed")
def _(ctx):
    marker = Path(tempfile.gettempdir()) / "pc3d_probe_pwned"
    marker.unlink(missing_ok=True)
    p = ctx.dir / "evil.pt"
    p.write_bytes(pickle.dumps(_Payload()))
    outcome, msg = expect(lambda: _load_trained(p), ["evil.pt"])
    if marker.exists():
        marker.unlink()
        return "FAIL-silent", "the pickled payload was EXECUTED: " + msg
    if outcome == "OK-error" and re.search(r"truncated or corrupted", msg) and not re.search(r"pickle|weights_only|"
                                                                                               r"not allowed", msg):
        return "FAIL-unnamed", "refused, but the message blames truncation/corruption: " + msg
    return outcome, msg


@case("checkpoints", "ckpt/torch-pickled-module")
def _(ctx):
    import torch

    p = ctx.dir / "module.pt"
    torch.save(torch.nn.Linear(2, 2), p)
    outcome, msg = expect(lambda: _load_trained(p), ["module.pt"])
    if outcome == "OK-error" and "truncated or corrupted" in msg and not re.search(r"pickle|weights_only", msg):
        return "FAIL-unnamed", "refused, but the message blames truncation/corruption: " + msg
    return outcome, msg


@case("checkpoints", "ckpt/run-folder-all-saves-corrupt")
def _(ctx):
    from pc3d.engine.runner import find_checkpoint

    run = ctx.dir / "run"
    (run / "checkpoints").mkdir(parents=True)
    for step in (1, 2):
        (run / "checkpoints" / f"step_{step:08d}.pt").write_bytes(os.urandom(100))
    return expect(lambda: find_checkpoint(None, str(run)), ["checkpoints", "run"])


@case("checkpoints", "ckpt/best-corrupt-step-good")
def _(ctx):
    from pc3d.engine.runner import find_checkpoint

    run = ctx.dir / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(ctx.det, run / "checkpoints" / "step_00000001.pt")
    (run / "checkpoints" / "best.pt").write_bytes(b"\0" * 64)

    def check(path):
        return Path(path).name == "step_00000001.pt", f"fell back to {Path(path).name}"
    outcome, msg = expect(lambda: find_checkpoint(None, str(run)), ["best.pt"], check)
    return outcome, msg


@case("checkpoints", "ckpt/test-cli-other-model-weights", kind="cli")
def _(ctx):
    import torch

    ck = torch.load(ctx.det, weights_only=True)
    ck = _seg_weights(ck, ctx)
    p = ctx.dir / "mixed.pt"
    torch.save(ck, p)
    rc, out, err = run_cli(ctx, [str(ROOT / "tools" / "test.py"), f"ckpt={p}", f"out_dir={ctx.dir / 'o'}"])
    return judge_cli("test", rc, out, err, ["mixed.pt"])
