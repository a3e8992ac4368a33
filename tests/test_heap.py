"""The heap policy (pc3d_ops.heap): after `import pc3d`, a large block freed and allocated again is reused
from the heap instead of being mapped and page-faulted afresh; glibc's own variables and PC3D_MALLOC=system
leave the C library alone. Each case runs in a fresh interpreter (the policy is process state)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from pc3d_ops.heap import ENV_OPT_OUT, USER_VARS, _mallopt, keep_freed_memory

pytestmark = pytest.mark.skipif(_mallopt() is None, reason="no glibc mallopt here")

# 20 allocations of a 48 MB array, each filled and freed: minor page faults counted around the loop
FAULTS = ("import resource, json, numpy as np\n"
          "def faults(): return resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
          "a = np.ones(12_000_000, np.float32); del a\n"  # first touch: faults either way
          "f0 = faults()\n"
          "for _ in range(20):\n"
          "    a = np.empty(12_000_000, np.float32); a[:] = 1; del a\n"
          "print(json.dumps({'faults': faults() - f0}))\n")


def run(code: str, **env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in (*USER_VARS, ENV_OPT_OUT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**base, **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def default_faults() -> int:
    """Page faults of the loop under the C library's own policy (fewer than one per 4 KiB page where the
    kernel backs large mappings with huge pages, but thousands either way)."""
    return run("import numpy\n" + FAULTS)["faults"]


def test_import_pc3d_keeps_freed_blocks_for_reuse(default_faults):
    assert default_faults > 2000
    assert run("import pc3d\n" + FAULTS)["faults"] < default_faults / 5


@pytest.mark.parametrize("env", [{"PC3D_MALLOC": "system"}, {"MALLOC_MMAP_THRESHOLD_": "131072"},
                                 {"MALLOC_TRIM_THRESHOLD_": "131072"}])
def test_user_choice_leaves_the_c_library_alone(env, default_faults):
    assert not keep_freed_memory(env)
    assert run("import pc3d\n" + FAULTS, **env)["faults"] > default_faults / 5
