"""The package skeleton: import hygiene, the error hierarchy and the environment report."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pc3d.errors import ConfigError, DataFormatError, Pc3dError, SparseTensorError

HEAVY = ("open3d", "spconv", "pyarrow")


def test_import_leaves_heavy_packages_and_environment_alone():
    code = (
        "import os, sys, json, torch\n"
        "env, threads = dict(os.environ), torch.get_num_threads()\n"
        "import pc3d, pc3d.sparse, pc3d.voxel, pc3d.geometry, pc3d.data, pc3d.sim, pc3d.models,"
        " pc3d.eval, pc3d.engine, pc3d.viz, pc3d.errors, pc3d_ops\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
        "print(env == dict(os.environ), threads == torch.get_num_threads())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    imported, unchanged = out.stdout.strip().splitlines()
    assert imported == "[]", f"import pc3d imported {imported}"
    assert unchanged == "True True"


def test_data_format_error_names_the_file():
    err = DataFormatError("/data/kitti/000001.bin", "size 10 is not a multiple of 16 bytes")
    assert err.path == "/data/kitti/000001.bin"
    assert "000001.bin" in str(err) and "multiple of 16" in str(err)
    assert isinstance(err, Pc3dError) and isinstance(err, ValueError)
    assert issubclass(ConfigError, Pc3dError) and issubclass(SparseTensorError, Pc3dError)


def test_info_reports_versions_and_backends():
    out = subprocess.run([sys.executable, "-m", "pc3d", "info"], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    for word in ("torch", "numba", "spconv", "open3d", "threads", "sparse backends", "native"):
        assert word in out.stdout, out.stdout


def test_info_rejects_unknown_command():
    out = subprocess.run([sys.executable, "-m", "pc3d", "frobnicate"], capture_output=True, text=True)
    assert out.returncode == 2 and "usage" in out.stderr


@pytest.mark.parametrize("name", ["sparse", "voxel", "geometry", "data", "sim", "models", "eval",
                                  "engine", "viz"])
def test_every_subpackage_says_what_belongs_there(name):
    module = __import__(f"pc3d.{name}", fromlist=["_"])
    assert module.__doc__ and len(module.__doc__.split()) > 12
