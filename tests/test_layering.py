"""Layering: every pc3d module imports on its own, data does not depend on engine, and the learning
maps ship inside an installed wheel."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Imports each module of a package first, in a child forked from a process that holds only third-party
# packages: a child starts with none of the package's modules loaded, as a fresh interpreter does, so an
# import cycle that breaks import order fails there. Forking skips re-importing torch ~150 times.
IMPORT_ALONE = r"""
import importlib, os, sys, traceback
from pathlib import Path

for name in ("numpy", "torch", "numba", "yaml", "omegaconf", "hydra", "tqdm"):
    try:
        importlib.import_module(name)
    except ImportError:
        pass
package = Path(sys.argv[1])
modules = sorted(".".join(p.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__")
                 for p in package.rglob("*.py"))
assert not [m for m in sys.modules if m.split(".")[0] == package.name], "the package was imported before forking"
for module in modules:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(module)
        except BaseException:
            os.write(write, traceback.format_exc().strip().splitlines()[-1].encode())
            os._exit(1)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode()
    if os.waitpid(pid, 0)[1]:
        print(f"{module}: {message}")
print(f"{len(modules)} modules")
"""


def _import_alone(package: Path) -> tuple[list[str], str]:
    """(failures 'module: error', summary line) of importing each module of `package` alone."""
    proc = subprocess.run([sys.executable, "-c", IMPORT_ALONE, str(package)], cwd=package.parent,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(package.parent)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    *failures, summary = proc.stdout.strip().splitlines()
    return failures, summary


needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="the import check forks (POSIX only)")


@needs_fork
def test_every_pc3d_module_imports_alone():
    failures, summary = _import_alone(ROOT / "pc3d")
    assert not failures, "\n".join(failures)
    assert int(summary.split()[0]) > 100


@needs_fork
def test_import_check_catches_a_cycle_that_breaks_import_order(tmp_path):
    package = tmp_path / "cyclic"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .b import B\nA = 1\n")
    (package / "b.py").write_text("from .a import A\nB = 2\n")
    (package / "c.py").write_text("C = 3\n")
    failures, summary = _import_alone(package)
    assert summary == "4 modules"
    assert [f.split(":")[0] for f in failures] == ["cyclic.a", "cyclic.b"]
    assert all("ImportError" in f for f in failures)


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of every module `path` imports, function-level imports included."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            names.add(base)
    return names


def test_data_does_not_depend_on_engine():
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in _imported_modules(p) if m.startswith("pc3d.engine"))
                 for p in (ROOT / "pc3d" / "data").rglob("*.py")}
    assert not {k: v for k, v in offenders.items() if v}


def test_learning_maps_ship_in_the_wheel_and_load_when_installed(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("setup.py", "pyproject.toml"):
        shutil.copy(ROOT / name, source / name)
    for name in ("pc3d", "ops"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", ".", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist")],
                   cwd=source, check=True, capture_output=True, timeout=300)
    wheel, = (tmp_path / "dist").glob("pc3d-*.whl")
    from zipfile import ZipFile

    names = set(ZipFile(wheel).namelist())
    assert {"pc3d/data/learning_maps/semantic-kitti.yaml", "pc3d/data/learning_maps/semantic-kitti-mos.yaml"} <= names
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True,
                   capture_output=True, timeout=300)
    probe = ("from pc3d.data.semantickitti import LEARNING_MAPS, MODES, load_learning_map\n"
             "print(LEARNING_MAPS)\n"
             "for mode, name in MODES.items():\n"
             "    print(mode, len(load_learning_map(str(LEARNING_MAPS / name))['learning_map_inv']))\n")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(site)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    location, *loaded = proc.stdout.splitlines()
    assert Path(location) == site / "pc3d" / "data" / "learning_maps"
    assert loaded == ["semantic 20", "mos 3"]
