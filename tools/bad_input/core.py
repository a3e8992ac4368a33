"""Case registry (case, Ctx) and the classification of what pc3d did (expect, judge_cli, run_cli)."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
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
    """Fixture paths (pristine: copy before corrupting), a fresh folder per case and the hang timeout (s)."""

    def __init__(self, work: Path, name: str, timeout: float = 120.0):
        self.work, self.timeout = work, timeout
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


def run_cli(ctx: Ctx, args: list[str], env: dict | None = None):
    """(rc or None after ctx.timeout seconds, stdout, stderr) of `python args...` in the case folder."""
    e = {k: v for k, v in os.environ.items() if k != "PC3D_DEBUG"}
    e.update({"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"})
    e.update(env or {})
    proc = subprocess.Popen([PYTHON, *args], cwd=ctx.dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=e, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=ctx.timeout)
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
