"""Hostile-input probe: feed pc3d malformed, truncated, contradictory and out-of-range inputs and classify what it does.

    python tools/probe_bad_input.py [--only AREA[,AREA]] [--out DIR] [--timeout S] [--keep] [--list]

A developer tool (issue #15, acceptance item 2). In a temporary folder it simulates small valid datasets
(KITTI, SemanticKITTI, Waymo v2, ScanNet, scene flow; pc3d.sim, narrow sensors so frames are small), writes
small checkpoints (a CenterPoint detector and a sparse U-Net segmentor, seeded and untrained, as
tests/conftest.py's experiment_checkpoint does, plus a 1-epoch `experiment=toy` run of tools/train.py),
then corrupts copies of them in many distinct ways, one case each, across five areas:

    loaders      pc3d.data datasets (truncated / empty / NaN files, wrong columns and dtypes, duplicate ids,
                 unknown class names, negative sizes, label count mismatches, missing calib / poses / split
                 files, partial folders, zero-row or missing parquet components, wrong ply headers,
                 symlink loops, FIFOs, ...)
    tools        tools/*.py and `python -m pc3d` as subprocesses (wrong override types, nonexistent paths,
                 directories for files, unknown experiments, empty folders, conflicting flags, out-of-range
                 values); create_data / visualize are also driven in-process through their main(argv)
    inference    pc3d.infer readers through tools/infer.py's main(argv) (each reader, empty and bad frames
                 inside sequences, --strict)
    checkpoints  zero-byte, truncated, random bytes, pickled objects, other models' weights, missing config
    engine       pc3d.sparse / pc3d.voxel limits (int64 coordinates, huge spatial shapes, negative or
                 out-of-shape coordinates, duplicates, kernel_size / stride 0 or negative, channel mismatch,
                 empty tensors, NaN features, wrong dtypes); results are checked against a numpy reference

Each case is classified:

    OK-error        a pc3d error (pc3d.errors.Pc3dError; for a CLI: exit 2 and a '<tool>: error:' line on
                    stderr, no traceback) whose message names the file / frame / key involved
    OK-warning      succeeded with a warning (or a 'skipping' line) that counts what was dropped
    OK-valid        the input was legitimate and the result was checked correct
    FAIL-traceback  a foreign exception (or a printed traceback, or a crash of the process)
    FAIL-hang       no answer within --timeout seconds
    FAIL-silent     succeeded with data loss or a wrong result and no warning
    FAIL-unnamed    a pc3d error whose message does not name the file / frame / key
    FAIL-exit       (CLI) an error exit without traceback that breaks the entry-point rule (exit status
                    other than 2, or no '<tool>: error:' line), e.g. hydra's own multi-line errors
    FAIL-rejected   a legitimate input refused with an error

In-process cases run in worker subprocesses (so a hang is caught: the worker is killed after --timeout and
restarted after the hung case); CLI cases run as subprocesses with the same timeout. The table (case, area,
outcome, first line of message) and the counts per outcome are printed and written, with every record, to
<out>/probe.md and <out>/probe.json (default --out: a new temporary folder; never inside the repository).
--only restricts the areas; --list prints the cases without running them. Exit status: 0 when no case
failed, 1 otherwise. Runs in about 10 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import logging
import os
import pickle
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
PYTHON = sys.executable
AREAS = ("loaders", "tools", "inference", "checkpoints", "engine")
OUTCOMES = ("OK-error", "OK-warning", "OK-valid", "FAIL-traceback", "FAIL-hang", "FAIL-silent", "FAIL-unnamed",
            "FAIL-exit", "FAIL-rejected")

# ----------------------------------------------------------------------------------------------------------
# registry


class Case:
    def __init__(self, name: str, area: str, fn: Callable, kind: str):
        self.name, self.area, self.fn, self.kind = name, area, fn, kind


CASES: list[Case] = []


def case(area: str, name: str, kind: str = "lib"):
    """Register fn(ctx) -> (outcome, message) as a case; kind: lib (in-process) or cli (subprocess)."""
    def register(fn):
        if any(c.name == name for c in CASES):
            raise RuntimeError(f"duplicate case name {name}")
        CASES.append(Case(name, area, fn, kind))
        return fn
    return register


class Ctx:
    """Fixture paths (pristine: copy before corrupting) and a fresh folder per case."""

    def __init__(self, work: Path, name: str):
        self.work = work
        self.fx = work / "fixtures"
        self.dir = work / "cases" / re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        if self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)

    def copy(self, fixture: str, name: str | None = None) -> Path:
        dst = self.dir / (name or fixture)
        shutil.copytree(self.fx / fixture, dst, symlinks=True)
        return dst

    @property
    def det(self) -> Path:
        return self.fx / "ckpt" / "centerpoint_sim_kitti" / "checkpoints" / "step_00000001.pt"

    @property
    def seg(self) -> Path:
        return self.fx / "ckpt" / "sim_semantickitti_seg" / "checkpoints" / "step_00000001.pt"

    @property
    def indoor(self) -> Path:
        return self.fx / "ckpt" / "sim_scannet_seg" / "checkpoints" / "step_00000001.pt"


# ----------------------------------------------------------------------------------------------------------
# classification


def first_line(text: str) -> str:
    lines = [x.strip() for x in str(text).splitlines() if x.strip()]
    return lines[0] if lines else ""


def named(message: str, names) -> bool:
    return any(str(n) in message for n in names)


class Capture:
    """Warnings (warnings module and logging WARNING+) and stderr / stdout of an in-process call."""

    def __enter__(self):
        self.err, self.out = io.StringIO(), io.StringIO()
        self._w = warnings.catch_warnings(record=True)
        self.records = self._w.__enter__()
        warnings.simplefilter("always")
        self.logs: list[str] = []
        handler = logging.Handler(logging.WARNING)
        handler.emit = lambda record: self.logs.append(record.getMessage())
        self._handler = handler
        logging.getLogger().addHandler(handler)
        self._e = contextlib.redirect_stderr(self.err)
        self._o = contextlib.redirect_stdout(self.out)
        self._e.__enter__()
        self._o.__enter__()
        return self

    def __exit__(self, *exc):
        self._o.__exit__(*exc)
        self._e.__exit__(*exc)
        logging.getLogger().removeHandler(self._handler)
        self._w.__exit__(*exc)
        return False

    @property
    def warnings(self) -> list[str]:
        lines = [str(w.message) for w in self.records] + self.logs
        lines += [x for x in self.err.getvalue().splitlines() if re.search(r"warn|skip|drop", x, re.I)]
        lines += [x for x in self.out.getvalue().splitlines() if re.search(r"skipped|dropped", x, re.I)]
        return [x for x in lines if x.strip()]


def counted_warning(warns: list[str], names) -> str | None:
    for w in warns:
        if re.search(r"\d", w) and (not names or named(w, names)):
            return w
    return None


def expect(action: Callable, names=(), valid: Callable | None = None, legit: bool = False):
    """Run action() in-process and classify. names: strings one of which a good message contains.
    valid(result) -> (ok, message): the result is correct (an OK-valid outcome when the input is legit, or
    the check that nothing was lost). legit: the input is legitimate (an error is FAIL-rejected)."""
    from pc3d.errors import Pc3dError

    with Capture() as cap:
        try:
            result = action()
        except Pc3dError as error:
            msg = f"{type(error).__name__}: {error}"
            if legit:
                return "FAIL-rejected", msg
            return ("OK-error" if named(str(error), names) else "FAIL-unnamed"), msg
        except Exception as error:  # noqa: BLE001 - a foreign exception is what we are looking for
            tb = traceback.extract_tb(error.__traceback__)
            where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
            return "FAIL-traceback", f"{type(error).__name__}: {first_line(str(error))}{where}"
    warns = cap.warnings
    if valid is not None:
        try:
            ok, msg = valid(result)
        except Exception as error:  # noqa: BLE001
            ok, msg = False, f"result check failed: {type(error).__name__}: {error}"
        if ok:
            return "OK-valid", msg
    else:
        msg = "succeeded with no error and no warning"
    w = counted_warning(warns, names)
    if w is not None and not legit:
        return "OK-warning", w
    if w is not None and legit:
        return "FAIL-silent", f"{msg} (warning: {first_line(w)})"
    if warns:
        return "FAIL-silent", f"{msg}; uncounted / unnamed warning: {first_line(warns[0])}"
    return "FAIL-silent", msg


def judge_cli(tool: str, rc, out: str, err: str, names=(), valid: Callable | None = None, legit: bool = False,
              exc: str | None = None):
    """Classify a CLI run (subprocess or main(argv) in-process)."""
    if exc is not None:
        return "FAIL-traceback", exc
    if rc is None:
        return "FAIL-hang", "no exit within the timeout"
    text = out + "\n" + err
    if "Traceback (most recent call last)" in text:
        tail = [x for x in err.splitlines() if x.strip()] or [x for x in out.splitlines() if x.strip()]
        return "FAIL-traceback", f"exit {rc}: {tail[-1].strip() if tail else ''}"
    lines = [x.strip() for x in err.splitlines() if x.strip()]
    if rc == 0:
        msg = "exit 0, no warning"
        if valid is not None:
            try:
                ok, msg = valid()
            except Exception as error:  # noqa: BLE001
                ok, msg = False, f"result check failed: {type(error).__name__}: {error}"
            if ok:
                return "OK-valid", msg
        warns = [x for x in lines + out.splitlines() if re.search(r"warn|skip|drop", x, re.I)]
        w = counted_warning(warns, names)
        if w is None and (not names or named(err, names)):  # the count on one line, the names on the next ones
            w = counted_warning(warns, ())
        if w is not None and not legit:
            return "OK-warning", w.strip()
        return "FAIL-silent", msg + (f"; stderr: {lines[-1]}" if lines else "")
    pattern = re.compile(rf"^(usage: .*)?(python -m )?{re.escape(tool)}(\.py)?: error:")
    errline = next((x for x in reversed(lines) if pattern.match(x)), None)
    if rc == 2 and errline:
        if legit:
            return "FAIL-rejected", errline
        return ("OK-error" if named(errline, names) else "FAIL-unnamed"), errline
    if rc < 0:
        return "FAIL-traceback", f"killed by signal {-rc}: {lines[-1] if lines else ''}"
    shown = errline or (lines[0] if lines else (first_line(out) or "(no output)"))
    return "FAIL-exit", f"exit {rc}: {shown}"


def run_cli(ctx: Ctx, args: list[str], timeout: float, env: dict | None = None):
    """(rc or None on timeout, stdout, stderr) of `python args...` in the case folder."""
    e = {k: v for k, v in os.environ.items() if k != "PC3D_DEBUG"}
    e.update({"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"})
    e.update(env or {})
    proc = subprocess.Popen([PYTHON, *args], cwd=ctx.dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=e, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return None, out, err


_MODULES: dict[str, object] = {}


def tool_module(name: str):
    if name not in _MODULES:
        spec = importlib.util.spec_from_file_location(f"_probe_tool_{name}", ROOT / "tools" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _MODULES[name] = module
    return _MODULES[name]


def run_main(tool: str, argv: list[str]):
    """(rc, stdout, stderr, foreign-exception text or None) of tools/<tool>.py main(argv) in-process."""
    module = tool_module(tool)
    err, out = io.StringIO(), io.StringIO()
    exc = None
    rc = 0
    argv0, sys.argv[0] = sys.argv[0], str(ROOT / "tools" / f"{tool}.py")  # argparse names the tool from it
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        old = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            err.write(f"{Path(filename).name}:{lineno}: {category.__name__}: {message}\n")

        warnings.showwarning = show
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                rc = module.main(argv)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except Exception as error:  # noqa: BLE001
            tb = traceback.extract_tb(error.__traceback__)
            where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
            exc = f"{type(error).__name__}: {first_line(str(error))}{where}"
        finally:
            warnings.showwarning = old
            sys.argv[0] = argv0
    return rc, out.getvalue(), err.getvalue(), exc


def main_case(tool: str, argv: list[str], names=(), valid=None, legit=False):
    rc, out, err, exc = run_main(tool, argv)
    return judge_cli(tool, rc, out, err, names, valid, legit, exc)


# ----------------------------------------------------------------------------------------------------------
# fixtures


def build_fixtures(work: Path, timeout: float) -> dict:
    """Simulated datasets, two seeded checkpoints and a 1-epoch toy training run under <work>/fixtures."""
    fx = work / "fixtures"
    done = fx / "done.json"
    if done.is_file():
        return json.loads(done.read_text())
    fx.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    from pc3d.sim.api import simulate_dataset

    simulate_dataset("kitti", fx / "kitti", frames=3, seed=0, columns=256)
    simulate_dataset("semantickitti", fx / "semantickitti", frames=4, seed=0, sequence_length=2, columns=256)
    simulate_dataset("waymo", fx / "waymo", frames=4, seed=0, sequence_length=2, columns=256)
    simulate_dataset("scannet", fx / "scannet", frames=2, seed=0)
    simulate_dataset("sceneflow", fx / "sceneflow", frames=2, seed=0, columns=256)
    for exp, root in (("centerpoint_sim_kitti", fx / "kitti"), ("sim_semantickitti_seg", fx / "semantickitti"),
                      ("sim_scannet_seg", fx / "scannet")):
        _experiment_checkpoint(fx / "ckpt", exp, f"dataset.root={root}", "train.workers=0")
    # a real tools/train.py run (1 epoch of the toy recipe): run folder with config.yaml + checkpoints
    run = subprocess.run([PYTHON, str(ROOT / "tools" / "train.py"), "experiment=toy", "train.max_epochs=1",
                          f"hydra.run.dir={fx / 'toy_run'}", "train.tensorboard=false"],
                         cwd=fx, capture_output=True, text=True, timeout=timeout * 3)
    info = {"seconds": round(time.time() - t0, 1), "toy_rc": run.returncode,
            "toy_tail": (run.stderr or run.stdout).strip().splitlines()[-3:]}
    done.write_text(json.dumps(info))
    return info


def _experiment_checkpoint(folder: Path, experiment: str, *overrides: str) -> Path:
    """As tests/conftest.py: a checkpoint of the experiment's seeded, untrained model with its resolved config."""
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from pc3d.engine.checkpoint import FORMAT, VERSION, atomic_save
    from pc3d.engine.runner import resolved_config

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        cfg = compose("config", overrides=[f"experiment={experiment}", *overrides])
    torch.manual_seed(0)
    model = instantiate(cfg.model, _convert_="all")
    path = folder / experiment / "checkpoints" / "step_00000001.pt"
    atomic_save({"format": FORMAT, "version": VERSION, "model": model.state_dict(), "config": resolved_config(cfg),
                 "progress": {"step": 1, "epoch": 0}}, path)
    return path


# ----------------------------------------------------------------------------------------------------------
# file corruption helpers


def truncate(path: Path, remove: int = 7) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:max(0, len(data) - remove)])


def edit_lines(path: Path, fn: Callable[[list[str]], list[str]]) -> None:
    path.write_text("\n".join(fn(path.read_text().splitlines())) + "\n")


def bin_points(path: Path, columns: int = 4) -> np.ndarray:
    return np.fromfile(path, "<f4").reshape(-1, columns)


def make_fifo(path: Path) -> None:
    if path.exists() or path.is_symlink():
        path.unlink()
    os.mkfifo(path)


def loop_link(path: Path) -> None:
    if path.exists() or path.is_symlink():
        path.unlink()
    os.symlink(path.name, path)


def pq_read(path: Path):
    import pyarrow.parquet as pq

    return pq.read_table(path)


def pq_write(table, path: Path, row_group_size: int | None = None) -> None:
    import pyarrow.parquet as pq

    pq.write_table(table, path, row_group_size=row_group_size)


def pq_set(path: Path, column: str, fn: Callable[[list], list], row_group_size: int | None = None) -> None:
    """Rewrite one column through fn(list of values); a fixed-size list column becomes a variable one."""
    import pyarrow as pa

    table = pq_read(path)
    i = table.schema.get_field_index(column)
    values = fn(table.column(column).to_pylist())
    kind = table.schema.field(i).type
    if pa.types.is_fixed_size_list(kind):
        kind = pa.list_(kind.value_type)
    table = table.set_column(i, pa.field(column, kind), pa.array(values, type=kind))
    pq_write(table, path, row_group_size)


def ply_header_and_body(path: Path) -> tuple[list[str], bytes]:
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    return data[:end].decode("ascii").splitlines(), data[end:]


def ply_write(path: Path, header: list[str], body: bytes) -> None:
    path.write_bytes(("\n".join(header) + "\n").encode("ascii") + body)


def ply_vertex_count(path: Path) -> int:
    header, _ = ply_header_and_body(path)
    return int(next(x for x in header if x.startswith("element vertex")).split()[2])


# ----------------------------------------------------------------------------------------------------------
# loaders: KITTI


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


# ----------------------------------------------------------------------------------------------------------
# loaders: SemanticKITTI


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


# ----------------------------------------------------------------------------------------------------------
# loaders: Waymo v2


def _waymo(root: Path, split="training", **kw):
    from pc3d.data import WaymoDataset

    return WaymoDataset(root, split, training=False, **kw)


def _wc(root: Path, component: str, split="training") -> Path:
    return next((root / split / component).glob("*.parquet"))


def _w_case(name: str, corrupt: Callable[[Path], object], names, valid=None, legit=False, **kw):
    @case("loaders", name)
    def run(ctx: Ctx):
        root = ctx.copy("waymo")
        seg = _wc(root, "lidar").stem
        corrupt(root)
        return expect(lambda: load_all(_waymo(root, **kw)), [*names, seg], valid(root) if valid else None, legit)
    return run


def _box_field(r: Path, field: str, fn):
    pq_set(_wc(r, "lidar_box"), f"[LiDARBoxComponent].{field}", lambda v: [fn(i, x) for i, x in enumerate(v)])


def _lidar_field(r: Path, field: str, fn):
    pq_set(_wc(r, "lidar"), f"[LiDARComponent].{field}", lambda v: [fn(i, x) for i, x in enumerate(v)],
           row_group_size=1)


def _w_zero_rows(r: Path, component: str, row_group_size=None):
    path = _wc(r, component)
    table = pq_read(path)
    pq_write(table.slice(0, 0), path, row_group_size)


def _w_drop_column(r: Path, component: str, column: str):
    path = _wc(r, component)
    table = pq_read(path)
    pq_write(table.drop([column]), path, 1 if component == "lidar" else None)


def _w_extra_laser(r: Path):
    """Frame 0 gets a second row (a copy of its TOP row) as laser 3 (SIDE_LEFT), which has no calibration."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = _wc(r, "lidar")
    table = pq_read(path)
    row = table.slice(0, 1)
    i = row.schema.get_field_index("key.laser_name")
    side = row.set_column(i, row.schema.field(i), pa.array([3], type=row.schema.field(i).type))
    with pq.ParquetWriter(path, table.schema) as writer:
        writer.write_table(pa.concat_tables([row, side]))
        for k in range(1, table.num_rows):
            writer.write_table(table.slice(k, 1))


def _w_duplicate_rows(r: Path):
    import pyarrow as pa

    path = _wc(r, "lidar")
    table = pq_read(path)
    pq_write(pa.concat_tables([table.slice(0, 1), table]), path, 2)


_w_case("waymo/lidar_box-missing", lambda r: _wc(r, "lidar_box").unlink(), ["lidar_box"])
_w_case("waymo/lidar_box-zero-bytes", lambda r: _wc(r, "lidar_box").write_bytes(b""), ["lidar_box"])
_w_case("waymo/lidar_box-no-size-column", lambda r: _w_drop_column(
    r, "lidar_box", "[LiDARBoxComponent].box.size.x"), ["box.size.x"])
_w_case("waymo/lidar_box-negative-size", lambda r: _box_field(r, "box.size.y", lambda i, x: -abs(x) if i == 0 else x),
        ["lidar_box"])
_w_case("waymo/lidar_box-nan-center", lambda r: _box_field(r, "box.center.x", lambda i, x: float("nan") if i == 0
                                                         else x), ["lidar_box"])
_w_case("waymo/lidar_box-unknown-type-9", lambda r: _box_field(r, "type", lambda i, x: 9 if i == 0 else x),
        ["lidar_box", "type"])
_w_case("waymo/lidar_calibration-missing", lambda r: _wc(r, "lidar_calibration").unlink(), ["lidar_calibration"])
_w_case("waymo/lidar_calibration-extrinsic-15", lambda r: pq_set(
    _wc(r, "lidar_calibration"), "[LiDARCalibrationComponent].extrinsic.transform", lambda v: [x[:15] for x in v]),
    ["lidar_calibration"])
_w_case("waymo/lidar_calibration-no-min-column", lambda r: _w_drop_column(
    r, "lidar_calibration", "[LiDARCalibrationComponent].beam_inclination.min"), ["beam_inclination.min"])
_w_case("waymo/lidar-zero-rows", lambda r: _w_zero_rows(r, "lidar", 1), ["lidar"])
_w_case("waymo/lidar-truncated", lambda r: truncate(_wc(r, "lidar"), 300), ["lidar"])
_w_case("waymo/lidar-random-bytes", lambda r: _wc(r, "lidar").write_bytes(os.urandom(4096)), ["lidar"])
_w_case("waymo/lidar-shape-mismatch", lambda r: _lidar_field(
    r, "range_image_return1.shape", lambda i, x: [x[0], x[1] + 1, x[2]] if i == 1 else x), ["lidar"])
_w_case("waymo/lidar-nan-range", lambda r: _lidar_field(
    r, "range_image_return1.values", lambda i, x: [float("nan")] + x[1:] if i == 0 else x), ["lidar"])
_w_case("waymo/lidar-laser-without-calibration", lambda r: _w_extra_laser(r), ["laser"])
_w_case("waymo/lidar-duplicate-frame-rows", _w_duplicate_rows, ["lidar"])
_w_case("waymo/split-folder-missing", lambda r: None, ["validation", "testing"], split="testing")
_w_case("waymo/skip-bad-frames-after-bad-boxes", lambda r: _w_drop_column(
    r, "lidar_box", "[LiDARBoxComponent].box.heading"), ["box.heading"], skip_bad_frames=True)


@case("loaders", "waymo/index-json-not-json")
def _(ctx):
    root = ctx.copy("waymo")
    (root / "waymo_infos_training.json").write_text("{not json")
    return expect(lambda: load_all(_waymo(root)), ["waymo_infos_training.json"])


@case("loaders", "waymo/index-json-wrong-format")
def _(ctx):
    root = ctx.copy("waymo")
    (root / "waymo_infos_training.json").write_text(json.dumps({"format": "other", "version": 1, "segments": []}))
    return expect(lambda: load_all(_waymo(root)), ["waymo_infos_training.json"])


@case("loaders", "waymo/lidar_box-zero-rows-legit")
def _(ctx):
    root = ctx.copy("waymo")
    _w_zero_rows(root, "lidar_box")

    def check(samples):
        ok = len(samples) == 2 and all(len(s["gt_boxes"]) == 0 and len(s["points"]) > 0 for s in samples)
        return ok, f"{len(samples)} frames, 0 boxes each, points kept"
    return expect(lambda: load_all(_waymo(root)), [], check, legit=True)


# ----------------------------------------------------------------------------------------------------------
# loaders: ScanNet


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
    from pc3d.data.scannet import read_ply_vertices

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


# ----------------------------------------------------------------------------------------------------------
# loaders: scene flow


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


# ----------------------------------------------------------------------------------------------------------
# loaders: create_data (in-process through tools/create_data.py main(argv))


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

# ----------------------------------------------------------------------------------------------------------
# inference (tools/infer.py main(argv) in-process)


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
        found = _outputs(out, "*.json")
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


# ----------------------------------------------------------------------------------------------------------
# checkpoints (in-process: pc3d.engine.runner.load_trained, as tools/test.py and tools/infer.py load them)


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
    rc, out, err = run_cli(ctx, [str(ROOT / "tools" / "test.py"), f"ckpt={p}", f"out_dir={ctx.dir / 'o'}"],
                           TIMEOUT)
    return judge_cli("test", rc, out, err, ["mixed.pt"])


# ----------------------------------------------------------------------------------------------------------
# engine (pc3d.sparse, pc3d.voxel)


def ref_conv(coords, feats, weight, bias, kernel, stride, padding, dilation, subm, spatial_shape):
    """{coord tuple: feature vector} of a sparse conv (spconv semantics), by brute force (small inputs)."""
    coords = [tuple(int(v) for v in c) for c in coords]
    table = {c: i for i, c in enumerate(coords)}
    nd = len(kernel)
    ks = list(np.ndindex(*kernel))
    out: dict = {}
    if subm:
        for c in coords:
            acc = np.zeros(weight.shape[0], np.float64)
            for k in ks:
                src = (c[0], *[c[1 + a] + (k[a] - kernel[a] // 2) * dilation[a] for a in range(nd)])
                if src in table:
                    acc += weight[(slice(None), *k, slice(None))] @ feats[table[src]]
            out[c] = acc + (bias if bias is not None else 0)
        return out
    oshape = [(spatial_shape[a] + 2 * padding[a] - dilation[a] * (kernel[a] - 1) - 1) // stride[a] + 1
              for a in range(nd)]
    for c in coords:
        for k in ks:
            o = []
            for a in range(nd):
                v = c[1 + a] + padding[a] - k[a] * dilation[a]
                if v % stride[a] or not 0 <= v // stride[a] < oshape[a]:
                    break
                o.append(v // stride[a])
            else:
                key = (c[0], *o)
                out.setdefault(key, np.zeros(weight.shape[0], np.float64))
                out[key] += weight[(slice(None), *k, slice(None))] @ feats[table[c]]
    if bias is not None:
        for key in out:
            out[key] = out[key] + bias
    return out


def _conv_check(module, x, subm):
    """valid(result) comparing a conv's output to ref_conv."""
    w = module.weight.detach().double().numpy()
    b = None if module.bias is None else module.bias.detach().double().numpy()
    ref = ref_conv(x.coords.numpy(), x.feats.detach().double().numpy(), w, b, module.kernel_size, module.stride,
                   module.padding, module.dilation, subm, x.spatial_shape)

    def check(y):
        got = {tuple(int(v) for v in c): f for c, f in zip(y.coords.numpy(), y.feats.detach().double().numpy(),
                                                            strict=True)}
        if set(got) != set(ref):
            return False, f"output sites differ: {len(got)} vs reference {len(ref)}"
        nan_same = all(np.array_equal(np.isnan(got[k]), np.isnan(ref[k])) for k in ref)
        diffs = [np.abs(got[k] - ref[k])[~np.isnan(ref[k]) & ~np.isnan(got[k])] for k in ref]
        err = max((float(d.max()) for d in diffs if d.size), default=0.0)
        ok = err < 1e-3 and nan_same
        return ok, f"{len(got)} sites, max |diff| {err:.2e} vs the numpy reference" + ("" if nan_same else
                                                                                          ", NaN pattern differs")
    return check


def _torch():
    import torch

    return torch


def _st(coords, feats=None, shape=(8, 8, 8), batch=1, channels=4, cdtype=None, fdtype=None):
    import torch

    from pc3d.sparse import SparseTensor

    coords = torch.as_tensor(np.asarray(coords), dtype=cdtype or torch.int32)
    if feats is None:
        feats = torch.as_tensor(np.random.default_rng(0).standard_normal((len(coords), channels)),
                                dtype=fdtype or torch.float32)
    return SparseTensor(feats, coords, shape, batch)


def _rand_coords(n, shape, batch=1, seed=0, scale=None):
    rng = np.random.default_rng(seed)
    upper = np.array(shape if scale is None else [min(s, scale) for s in shape])
    c = np.unique(np.concatenate([rng.integers(0, batch, (n, 1)), rng.integers(0, upper, (n, len(shape)))], 1), axis=0)
    return c


def _subm(cin=4, cout=16, k=3, **kw):
    import torch

    from pc3d.sparse import SubMConv3d

    torch.manual_seed(0)
    return SubMConv3d(cin, cout, k, bias=True, **kw)


def _sconv(cin=4, cout=16, k=3, s=2, p=1, **kw):
    import torch

    from pc3d.sparse import SparseConv3d

    torch.manual_seed(0)
    return SparseConv3d(cin, cout, k, stride=s, padding=p, bias=True, **kw)


def _engine_run(make_x: Callable, make_conv: Callable, subm: bool, names=(), legit=False):
    import torch

    def action():
        x = make_x()
        conv = make_conv()
        action.check = _conv_check(conv, x, subm)
        with torch.no_grad():
            return conv(x)

    def valid(y):
        return action.check(y)
    return expect(action, names, valid, legit)


def _eng(name: str, fn: Callable[[], object], names=(), valid=None, legit=False):
    @case("engine", name)
    def run(ctx: Ctx):
        return expect(fn, names, valid, legit)
    return run


def _cluster(shape, n=40, offset=None):
    """Unique coords of a tight cluster (neighbours exist) placed at `offset` in a (possibly huge) grid."""
    base = np.array(offset if offset is not None else [s // 2 for s in shape], np.int64)
    c = _rand_coords(n, (4, 4, 4), seed=1)
    c[:, 1:] = c[:, 1:] + base - 2
    return c


@case("engine", "sparse/int64-coords-beyond-int32")
def _(ctx):
    import torch

    coords = np.array([[0, 1, 1, 1], [0, 1, 1, 2 ** 32 + 2]], np.int64)
    return expect(lambda: _st(coords, shape=(8, 8, 8), cdtype=torch.int64), ["int32", "2", "coord"],
                  valid=lambda x: (bool((x.coords.long() == torch.as_tensor(coords)).all()), "coords kept as given"))


@case("engine", "sparse/spatial-shape-beyond-int32")
def _(ctx):
    import torch

    shape = (2 ** 31 + 10, 8, 8)
    coords = np.array([[0, 2 ** 31 + 5, 1, 1]], np.int64)
    return expect(lambda: _st(coords, shape=shape, cdtype=torch.int64), ["spatial_shape", "int32", str(2 ** 31 + 10)],
                  valid=lambda x: (int(x.coords[0, 1]) == 2 ** 31 + 5, f"coords {x.coords.tolist()}"))


@case("engine", "sparse/subm-huge-shape-2^22-per-axis")
def _(ctx):
    shape = (2 ** 22,) * 3
    return _engine_run(lambda: _st(_cluster(shape, offset=[2 ** 22 - 3] * 3), shape=shape), _subm, True,
                       ["spatial_shape", "key"], legit=False)


@case("engine", "sparse/strided-huge-shape-2^21-per-axis")
def _(ctx):
    shape = (2 ** 21,) * 3
    return _engine_run(lambda: _st(_cluster(shape, offset=[2 ** 21 - 3] * 3), shape=shape), _sconv, False,
                       ["spatial_shape", "key"])


@case("engine", "sparse/subm-shape-2^20-per-axis-legit")
def _(ctx):
    shape = (2 ** 20,) * 3
    return _engine_run(lambda: _st(_cluster(shape, offset=[7, 2 ** 20 - 3, 123456]), shape=shape), _subm, True,
                       legit=True)


@case("engine", "sparse/subm-4d-2^16-per-axis")
def _(ctx):
    import torch

    from pc3d.sparse import SubMConv4d

    shape = (2 ** 16,) * 4
    c = _rand_coords(30, (3, 3, 3, 3), seed=2)
    c[:, 1:] += 2 ** 16 - 3

    def action():
        x = _st(c, shape=shape)
        torch.manual_seed(0)
        conv = SubMConv4d(4, 8, 3, bias=True)
        action.check = _conv_check(conv, x, True)
        with torch.no_grad():
            return conv(x)
    return expect(action, ["spatial_shape", "key"], lambda y: action.check(y))


_eng("sparse/negative-coords", lambda: _st([[0, -1, 2, 2], [0, 1, 1, 1]]), ["coordinate", "-1"])
_eng("sparse/coords-outside-shape", lambda: _st([[0, 8, 2, 2]]), ["coordinate", "8"])
_eng("sparse/batch-index-beyond-batch-size", lambda: _st([[3, 1, 2, 2]], batch=2), ["batch"])
_eng("sparse/coords-3-columns-for-3d", lambda: _st([[1, 2, 2]]), ["coords"])
_eng("sparse/coords-float", lambda: _st([[0, 1, 2, 2]], cdtype=_torch().float32), ["coords"])
_eng("sparse/feats-int", lambda: _st([[0, 1, 2, 2]], fdtype=_torch().int64), ["feats"])
_eng("sparse/feats-rows-mismatch", lambda: _st([[0, 1, 2, 2], [0, 1, 2, 3]],
                                               feats=_torch().zeros(3, 4)), ["feats"])
_eng("sparse/spatial-shape-zero", lambda: _st(np.zeros((0, 4), np.int32), shape=(0, 8, 8)), ["spatial_shape"])
_eng("sparse/spatial-shape-negative", lambda: _st(np.zeros((0, 4), np.int32), shape=(-5, 8, 8)), ["spatial_shape"])
_eng("sparse/spatial-shape-5d", lambda: _st(np.zeros((0, 6), np.int32), shape=(2, 2, 2, 2, 2)), ["spatial_shape"])
_eng("sparse/batch-size-zero-with-sites", lambda: _st([[0, 1, 1, 1]], batch=0), ["batch"])


@case("engine", "sparse/duplicate-coords-subm")
def _(ctx):
    return _engine_run(lambda: _st([[0, 1, 1, 1], [0, 1, 1, 1], [0, 2, 2, 2]]), _subm, True, ["duplicate"])


@case("engine", "sparse/duplicate-coords-strided")
def _(ctx):
    return _engine_run(lambda: _st([[0, 1, 1, 1], [0, 3, 3, 3], [0, 1, 1, 1]]), _sconv, False, ["duplicate"])


@case("engine", "sparse/duplicate-coords-dense")
def _(ctx):
    return expect(lambda: _st([[0, 1, 1, 1], [0, 1, 1, 1]]).dense(), ["duplicate"])


for _arg, _val in (("kernel_size", 0), ("kernel_size", -1), ("stride", 0), ("stride", -2), ("dilation", 0),
                   ("padding", -1)):
    def _mk(arg=_arg, val=_val):
        from pc3d.sparse import SparseConv3d

        kw = {"kernel_size": 3, "stride": 1, "padding": 0, "dilation": 1, arg: val}
        conv = SparseConv3d(4, 8, **kw)
        return conv(_st(_rand_coords(20, (8, 8, 8))))
    _eng(f"sparse/conv-{_arg}-{_val}", _mk, [_arg])


def _maxpool_k0():
    from pc3d.sparse import SparseMaxPool3d

    return SparseMaxPool3d(0, 1)(_st(_rand_coords(10, (8, 8, 8))))


_eng("sparse/maxpool-kernel-0", _maxpool_k0, ["kernel_size"])


def _subm_stride_2():
    return _subm(stride=2)(_st(_rand_coords(20, (8, 8, 8))))


def _chan_mismatch():
    return _subm(cin=4)(_st(_rand_coords(20, (8, 8, 8)), channels=3))


def _groups_bad():
    from pc3d.sparse import SubMConv3d

    return SubMConv3d(4, 6, 3, groups=4)


def _inverse_no_key():
    from pc3d.sparse import SparseInverseConv3d

    return SparseInverseConv3d(8, 4, 3)


def _inverse_unknown_key():
    from pc3d.sparse import SparseInverseConv3d

    return SparseInverseConv3d(4, 4, 3, indice_key="never_built")(_st(_rand_coords(10, (8, 8, 8))))


def _float64_feats():
    import torch

    x = _st(_rand_coords(20, (8, 8, 8)), fdtype=torch.float64)
    return _subm()(x)


def _requires_grad_int_coords_on_meta():
    import torch

    return _st([[0, 1, 1, 1]], feats=torch.zeros(1, 4, device="meta"))


_eng("sparse/subm-stride-2", _subm_stride_2, ["stride", "subm", "SubM"])
_eng("sparse/channel-mismatch", _chan_mismatch, ["channel", "in_channels", "4", "3"])
_eng("sparse/groups-not-dividing", _groups_bad, ["groups"])
_eng("sparse/inverse-without-indice-key", _inverse_no_key, ["indice_key"])
_eng("sparse/inverse-unknown-indice-key", _inverse_unknown_key, ["never_built"])
_eng("sparse/feats-float64-weights-float32", _float64_feats, ["dtype", "float64", "Double"],
     valid=lambda y: (y.feats.shape[1] == 16 and bool(_torch().isfinite(y.feats).all()),
                      f"output {y.feats.dtype} {tuple(y.feats.shape)}"))
_eng("sparse/feats-and-coords-on-different-devices", _requires_grad_int_coords_on_meta, ["device", "meta"])


@case("engine", "sparse/empty-tensor-subm-legit")
def _(ctx):
    return _engine_run(lambda: _st(np.zeros((0, 4), np.int32)), _subm, True, legit=True)


@case("engine", "sparse/empty-tensor-strided-legit")
def _(ctx):
    return _engine_run(lambda: _st(np.zeros((0, 4), np.int32)), _sconv, False, legit=True)


@case("engine", "sparse/nan-features")
def _(ctx):
    import torch

    def make():
        c = _cluster((16, 16, 16), n=30)
        f = torch.randn(len(c), 4)
        f[0, 1] = float("nan")
        return _st(c, feats=f, shape=(16, 16, 16))
    outcome, msg = _engine_run(make, _subm, True, ["NaN", "nan"])
    if outcome == "OK-valid":
        msg += " (NaN propagates exactly to the neighbours of the NaN site)"
    return outcome, msg


@case("engine", "sparse/even-kernel-subm")
def _(ctx):
    return _engine_run(lambda: _st(_cluster((16, 16, 16), n=30), shape=(16, 16, 16)), lambda: _subm(k=2), True,
                       ["kernel_size", "even", "odd"])


@case("engine", "sparse/strided-shape-smaller-than-kernel")
def _(ctx):
    return _engine_run(lambda: _st([[0, 0, 0, 0]], shape=(1, 1, 1)), lambda: _sconv(k=3, s=2, p=0), False,
                       ["spatial_shape", "kernel"])


@case("engine", "sparse/strided-random-legit")
def _(ctx):
    return _engine_run(lambda: _st(_rand_coords(200, (12, 10, 9), batch=2), shape=(12, 10, 9), batch=2), _sconv,
                       False, legit=True)


# voxelizers


def _vox_points(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.uniform([-10, -10, -2], [10, 10, 1], (n, 3)), rng.random((n, 1))], 1).astype(np.float32)


def _hard(voxel=0.5, rng=(-10, -10, -2, 10, 10, 1), p=5, m=20000, **kw):
    from pc3d.voxel import HardVoxelizer

    return HardVoxelizer(voxel, rng, p, m, **kw)


def _dyn(voxel=0.5, rng=(-10, -10, -2, 10, 10, 1), **kw):
    from pc3d.voxel import DynamicVoxelizer

    return DynamicVoxelizer(voxel, rng, **kw)


_eng("voxel/voxel-size-zero", lambda: _hard(0.0)(_vox_points()), ["voxel_size"])
_eng("voxel/voxel-size-negative", lambda: _dyn([0.5, -0.5, 0.5])(_vox_points()), ["voxel_size"])
_eng("voxel/voxel-size-nan", lambda: _dyn(float("nan"))(_vox_points()), ["voxel_size"])
_eng("voxel/range-inverted", lambda: _hard(0.5, (10, 10, 1, -10, -10, -2))(_vox_points()), ["point_range", "range"])
_eng("voxel/range-5-numbers", lambda: _dyn(0.5, (0, 0, 0, 1, 1))(_vox_points()), ["point_range", "range"])
_eng("voxel/max-voxels-zero", lambda: _hard(m=0)(_vox_points()), ["max_voxels"])
_eng("voxel/max-points-negative", lambda: _hard(p=-1)(_vox_points()), ["max_points"])
_eng("voxel/points-2-columns", lambda: _dyn()(_vox_points()[:, :2]), ["column", "shape"])
_eng("voxel/points-int64", lambda: _dyn()(_vox_points().astype(np.int64)), ["dtype", "int64"])
_eng("voxel/points-list-not-array", lambda: _dyn()(_vox_points().tolist()), ["numpy", "list"])
_eng("voxel/nan-policy-bogus", lambda: _dyn(nan_policy="ignore"), ["nan_policy"])


@case("engine", "voxel/some-nan-points-warn")
def _(ctx):
    pts = _vox_points()
    pts[::100, 0] = np.nan
    return expect(lambda: _dyn()(pts), ["20"])


@case("engine", "voxel/all-nan-points")
def _(ctx):
    pts = np.full((50, 4), np.nan, np.float32)
    return expect(lambda: _dyn()(pts), ["50", "NaN", "nan"])


@case("engine", "voxel/max-voxels-exceeded-counted")
def _(ctx):
    def check(hv):
        ok = hv.n_dropped_voxels > 0 and len(hv) == 10
        return ok, f"{len(hv)} voxels kept, n_dropped_voxels={hv.n_dropped_voxels}, n_dropped_points=" \
                   f"{hv.n_dropped_points}"
    return expect(lambda: _hard(m=10)(_vox_points()), [], check, legit=True)


@case("engine", "voxel/key-space-beyond-int64")
def _(ctx):
    pts = _vox_points(200)

    def check(dv):
        ref = np.floor((pts[:, :3] - np.array([-10, -10, -2], np.float32)) / np.float32(1e-6)).astype(np.int64)
        got = dv.coords[:, 1:][:, ::-1][dv.point_to_voxel]
        ok = np.array_equal(got, ref[dv.keep])
        return ok, f"{len(dv)} voxels; per-point cells {'match' if ok else 'DIFFER from'} floor((p - min) / size)"
    return expect(lambda: _dyn(1e-6)(pts), ["voxel_size", "grid", "key", "int"], check)


@case("engine", "voxel/cells-beyond-int32-per-axis")
def _(ctx):
    pts = _vox_points(200)

    def check(dv):
        ref = np.floor((pts[:, :3].astype(np.float64) + [10, 10, 2]) / 1e-9).astype(np.int64)
        got = np.asarray(dv.coords, np.int64)[:, 1:][:, ::-1][dv.point_to_voxel]
        ok = np.allclose(got, ref[dv.keep], rtol=1e-6)
        return ok, f"{len(dv)} voxels, coords dtype {dv.coords.dtype}; cells {'match' if ok else 'DIFFER'}"
    return expect(lambda: _dyn(1e-9)(pts), ["voxel_size", "grid", "int32", "cells"], check)


@case("engine", "voxel/grid-sample-empty-cloud-legit")
def _(ctx):
    from pc3d.voxel import grid_sample

    def check(r):
        coords, shape, inverse, keep = r
        return len(coords) == 0 and len(inverse) == 0 and len(keep) == 0, f"{len(coords)} voxels, shape {shape}"
    return expect(lambda: grid_sample(np.zeros((0, 4), np.float32), 0.1), [], check, legit=True)


@case("engine", "voxel/out-of-range-points-counted")
def _(ctx):
    pts = _vox_points()
    pts[:300, 0] += 100

    def check(hv):
        return hv.n_cropped == 300, f"n_cropped={hv.n_cropped} of 300 moved out of range"
    return expect(lambda: _hard()(pts), [], check, legit=True)


# ----------------------------------------------------------------------------------------------------------
# tools: CLI subprocesses (each pays a torch / hydra import)

TIMEOUT = 120.0


def _cli_case(name: str, tool: str, args: Callable[[Ctx], list[str]], names=(), valid=None, legit=False,
              area="tools", env=None):
    @case(area, name, kind="cli")
    def run(ctx: Ctx):
        argv = args(ctx)
        script = ["-m", "pc3d"] if tool == "pc3d" else [str(ROOT / "tools" / f"{tool}.py")]
        rc, out, err = run_cli(ctx, [*script, *argv], TIMEOUT, env)
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
        rc, out, err = run_cli(ctx, [str(ROOT / "tools" / "train.py"), *argv], TIMEOUT)
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


# ----------------------------------------------------------------------------------------------------------
# driver


def run_worker(work: Path, names: list[str], results: Path) -> None:
    """Run the named in-process cases one by one, appending {"start"} / {"result"} lines to `results`."""
    os.environ.pop("PC3D_DEBUG", None)
    import torch

    torch.set_num_threads(1)
    by_name = {c.name: c for c in CASES}
    with results.open("a") as log:
        for name in names:
            c = by_name[name]
            log.write(json.dumps({"start": name, "t": time.time()}) + "\n")
            log.flush()
            t0 = time.time()
            try:
                outcome, message = c.fn(Ctx(work, name))
            except Exception as error:  # noqa: BLE001 - a bug in the probe itself
                outcome, message = "PROBE-ERROR", f"{type(error).__name__}: {error} " + \
                    traceback.format_exc().splitlines()[-3].strip()
            rec = {"case": name, "area": c.area, "kind": c.kind, "outcome": outcome,
                   "message": str(message).replace(str(work), "$WORK"),
                   "seconds": round(time.time() - t0, 2)}
            log.write(json.dumps({"result": rec}) + "\n")
            log.flush()


def run_in_workers(work: Path, cases: list[Case], timeout: float, echo: Callable[[dict], None]) -> list[dict]:
    """Run `cases` in worker subprocesses; a case that exceeds `timeout` is FAIL-hang and the worker restarts."""
    pending = [c.name for c in cases]
    area = {c.name: c for c in cases}
    records: dict[str, dict] = {}
    results = work / "worker.jsonl"
    while pending:
        results.write_text("")
        proc = subprocess.Popen([PYTHON, __file__, "--worker", str(work), "--results", str(results), *pending],
                                cwd=work, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
        current, started, seen = None, time.time(), 0
        hung = None
        while True:
            time.sleep(0.3)
            lines = results.read_text().splitlines()
            for line in lines[seen:]:
                item = json.loads(line)
                if "start" in item:
                    current, started = item["start"], time.time()
                else:
                    rec = item["result"]
                    records[rec["case"]] = rec
                    pending.remove(rec["case"])
                    echo(rec)
                    current = None
            seen = len(lines)
            if proc.poll() is not None:
                break
            if current is not None and time.time() - started > timeout:
                hung = current
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if hung is None and current is not None:  # the worker died inside a case
            tail = [x for x in stderr.splitlines() if x.strip()]
            hung = current
            rec = {"case": current, "area": area[current].area, "kind": area[current].kind,
                   "outcome": "FAIL-traceback", "message": f"worker process died (exit {proc.returncode}): "
                                                           f"{tail[-1] if tail else ''}", "seconds": 0}
        elif hung is not None:
            rec = {"case": hung, "area": area[hung].area, "kind": area[hung].kind, "outcome": "FAIL-hang",
                   "message": f"no answer within {timeout:.0f} s (worker killed)", "seconds": timeout}
        elif pending:  # the worker exited between cases
            rec = None
            hung = pending[0]
            tail = [x for x in stderr.splitlines() if x.strip()]
            rec = {"case": hung, "area": area[hung].area, "kind": area[hung].kind, "outcome": "PROBE-ERROR",
                   "message": f"worker exited (rc {proc.returncode}) before this case: {tail[-1] if tail else ''}",
                   "seconds": 0}
        else:
            break
        records[hung] = rec
        pending.remove(hung)
        echo(rec)
    return [records[c.name] for c in cases]


def markdown(records: list[dict], info: dict) -> str:
    lines = ["# pc3d hostile-input probe", "", f"{len(records)} cases; fixtures built in {info.get('seconds')} s", "",
             "| case | area | outcome | first line of message |", "| --- | --- | --- | --- |"]
    for r in records:
        msg = first_line(r["message"]).replace("|", "\\|")
        lines.append(f"| {r['case']} | {r['area']} | {r['outcome']} | {msg[:300]} |")
    counts = Counter(r["outcome"] for r in records)
    lines += ["", "| outcome | cases |", "| --- | --- |"]
    lines += [f"| {o} | {counts[o]} |" for o in (*OUTCOMES, "PROBE-ERROR") if counts[o]]
    lines += ["", "| area | cases | failures |", "| --- | --- | --- |"]
    for area in AREAS:
        rs = [r for r in records if r["area"] == area]
        if rs:
            lines.append(f"| {area} | {len(rs)} | {sum(not r['outcome'].startswith('OK') for r in rs)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    global TIMEOUT
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", help="comma-separated areas: " + ", ".join(AREAS))
    p.add_argument("--out", type=Path, help="folder for probe.json and probe.md (default: a new temporary folder)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds before a case counts as a hang (120)")
    p.add_argument("--work", type=Path, help="work folder for fixtures and case copies (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--case", action="append", default=[], help="run only cases whose name contains this (repeatable)")
    p.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--results", type=Path, help=argparse.SUPPRESS)
    p.add_argument("names", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    TIMEOUT = args.timeout
    if args.worker:
        run_worker(args.worker, args.names, args.results)
        return 0
    areas = AREAS if not args.only else tuple(a.strip() for a in args.only.split(","))
    unknown = [a for a in areas if a not in AREAS]
    if unknown:
        p.error(f"--only: unknown area(s) {unknown}; choose from {', '.join(AREAS)}")
    cases = [c for c in CASES if c.area in areas and (not args.case or any(s in c.name for s in args.case))]
    if args.list:
        for c in cases:
            print(f"{c.area:12s} {c.kind:4s} {c.name}")
        print(f"{len(cases)} cases ({Counter(c.area for c in cases)})")
        return 0
    out = args.out or Path(tempfile.mkdtemp(prefix="pc3d_probe_out_"))
    if out.resolve().is_relative_to(ROOT) and not out.resolve().is_relative_to(ROOT / "outputs"):
        p.error(f"--out {out} is inside the repository; pick a folder outside it (or under outputs/)")
    out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="pc3d_probe_"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    print(f"probe: {len(cases)} cases; work folder {work}; building fixtures ...", flush=True)
    info = build_fixtures(work, args.timeout)
    print(f"fixtures ready in {info['seconds']} s (toy training exit {info['toy_rc']})", flush=True)

    def echo(rec):
        print(f"  {rec['outcome']:15s} {rec['case']:50s} {rec['seconds']:6.1f}s  {first_line(rec['message'])[:150]}",
              flush=True)

    lib = [c for c in cases if c.kind == "lib"]
    cli = [c for c in cases if c.kind == "cli"]
    records = run_in_workers(work, lib, args.timeout, echo) if lib else []
    for c in cli:
        t1 = time.time()
        try:
            outcome, message = c.fn(Ctx(work, c.name))
        except Exception as error:  # noqa: BLE001
            outcome, message = "PROBE-ERROR", f"{type(error).__name__}: {error}"
        rec = {"case": c.name, "area": c.area, "kind": c.kind, "outcome": outcome,
               "message": str(message).replace(str(work), "$WORK"),
               "seconds": round(time.time() - t1, 2)}
        records.append(rec)
        echo(rec)
    order = {c.name: i for i, c in enumerate(cases)}
    records.sort(key=lambda r: (AREAS.index(r["area"]), order[r["case"]]))
    md = markdown(records, info)
    (out / "probe.md").write_text(md)
    (out / "probe.json").write_text(json.dumps({"cases": records, "fixtures": info, "seconds": round(time.time() - t0),
                                                "counts": Counter(r["outcome"] for r in records)}, indent=1))
    print()
    print(md)
    print(f"{len(records)} cases in {time.time() - t0:.0f} s; wrote {out / 'probe.md'} and {out / 'probe.json'}")
    if not args.keep and not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r["outcome"].startswith("OK") for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
