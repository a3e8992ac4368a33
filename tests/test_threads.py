"""The thread policy (pc3d_ops.threads): one thread count for numba and torch in every process, and a
bounded OpenMP spin set before libgomp loads. Each case runs in a fresh interpreter: libgomp reads its
environment once, when it is loaded."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from pc3d_ops.threads import SPIN_ENV, USER_SPIN_VARS


def run(code: str, **env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in (*USER_SPIN_VARS, "PC3D_THREADS", "OMP_NUM_THREADS",
                                                                  "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**base, **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


REPORT = ("import json, os, sys\n"
          "print(json.dumps({k: os.environ.get(k) for k in ('GOMP_SPINCOUNT', 'OMP_WAIT_POLICY', "
          "'OMP_NUM_THREADS')}))\n")


def test_import_pc3d_first_bounds_the_openmp_spin():
    got = run("import pc3d, torch\n" + REPORT)
    assert got == {**dict.fromkeys(("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "OMP_NUM_THREADS")), **SPIN_ENV}


def test_user_wait_policy_is_left_alone():
    got = run("import pc3d\n" + REPORT, OMP_WAIT_POLICY="active")
    assert got == {"GOMP_SPINCOUNT": None, "OMP_WAIT_POLICY": "active", "OMP_NUM_THREADS": None}


def test_nothing_set_once_libgomp_is_loaded():
    got = run("import torch; torch.ones(2) + 1\nimport pc3d\n" + REPORT)
    assert got == {"GOMP_SPINCOUNT": None, "OMP_WAIT_POLICY": None, "OMP_NUM_THREADS": None}


BLAS_REPORT = ("import ctypes, json, os\n"
               "from pc3d_ops.threads import loaded_openblas\n"
               "lib = ctypes.CDLL([p for p in loaded_openblas() if 'numpy' in p][0])\n"
               "print(json.dumps([lib.scipy_openblas_get_num_threads64_(), os.environ.get('OPENBLAS_NUM_THREADS')]))\n")


def test_numpy_blas_runs_one_thread_whichever_is_imported_first():
    """numpy's OpenBLAS pool (whose idle threads spin on torch's cores) is cut to one thread by import pc3d,
    before numpy loads (the variable) or after (its setter); a user's OPENBLAS_NUM_THREADS stands."""
    if os.cpu_count() > 1:
        assert run("import numpy\n" + BLAS_REPORT)[0] > 1  # numpy alone: a pool
    for first in ("import pc3d, numpy\n", "import numpy, pc3d\n"):
        assert run(first + BLAS_REPORT) == [1, "1"]
        if os.cpu_count() > 1:
            assert run(first + BLAS_REPORT, OPENBLAS_NUM_THREADS="2") == [2, "2"]


def test_pc3d_threads_sets_torch_and_numba():
    """PC3D_THREADS=1: torch and the numba kernels run one thread, whether pc3d or torch is imported first."""
    conv = ("import numba, torch, pc3d.sparse as sp\n"
            "c = torch.cartesian_prod(*(torch.arange(n) for n in (1, 3, 3, 3))).int()\n"
            "y = sp.SubMConv3d(16, 16, 3)(sp.SparseTensor(torch.randn(27, 16), c, (3, 3, 3), 1))\n"
            "print(json.dumps([torch.get_num_threads(), numba.get_num_threads()]))\n")
    for first in ("import json, pc3d, torch\n", "import json, torch, pc3d\n"):
        assert run(first + conv, PC3D_THREADS="1") == [1, 1]


# numba's first parallel kernel launches its OpenMP pool, and the launch sets torch's count to the pool's
# size: block_pairs is such a kernel, called without any thread synchronisation (as a voxelizer is)
FIRST_KERNEL = ("import numpy as np\n"
                "from pc3d_ops.sparse_conv import block_pairs\n"
                "block_pairs(np.zeros((64, 3), np.int32), 8)\n"
                "print(json.dumps([torch.get_num_threads(), numba.get_num_threads()]))\n")


def test_thread_variables_survive_numbas_first_launch():
    """PC3D_THREADS=1 or OMP_NUM_THREADS=1 sizes numba's pool too: its first launch, by a kernel that does not
    synchronise the counts, leaves torch on one thread (pytest's workers run at OMP_NUM_THREADS=1)."""
    for env in ({"PC3D_THREADS": "1"}, {"OMP_NUM_THREADS": "1"}):
        for first in ("import json, pc3d, numba, torch\n", "import json, torch, pc3d, numba\n"):
            assert run(first + FIRST_KERNEL, **env) == [1, 1], (env, first)


def test_config_threads_survives_numbas_first_launch():
    """`threads: 1` in a run's config launches numba's pool at once: a kernel run later does not set torch
    back to one thread per core (two trainings at threads=1 on 2 cores ran 2 threads each before)."""
    code = ("import json, numba, torch\n"
            "from pc3d.engine.runner import apply_threads\n"
            "apply_threads({'threads': 1})\n")
    assert run(code + FIRST_KERNEL) == [1, 1]


def test_numba_follows_torch_count():
    """use_threads caps numba at torch's count (a simulator asking for every core gets torch's) and
    leaves torch's count as it was (numba's first OpenMP launch resets it)."""
    code = ("import json, numba, torch\n"
            "from pc3d_ops.threads import use_threads\n"
            "torch.set_num_threads(1)\n"
            "use_threads(numba.config.NUMBA_NUM_THREADS)\n"
            "print(json.dumps([torch.get_num_threads(), numba.get_num_threads(), numba.threading_layer()]))\n")
    threads, numba_threads, layer = run(code)
    assert (threads, numba_threads) == (1, 1)
    assert layer == "omp"  # the OpenMP pool torch uses: one set of threads per process


def test_invalid_pc3d_threads_is_ignored_with_a_warning():
    code = ("import json, warnings\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    import pc3d\n"
            "import os\n"
            "print(json.dumps([str(x.message) for x in w] + [os.environ.get('OMP_NUM_THREADS')]))\n")
    got = run(code, PC3D_THREADS="many")
    assert got[-1] is None and any("PC3D_THREADS" in m for m in got[:-1])


def _as_list(samples: list) -> list:
    return samples


class ThreadProbe:
    """A dataset whose samples report the loading process's thread settings."""

    collate_fn = staticmethod(_as_list)

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> dict:
        import numba
        import torch

        return {"torch": torch.get_num_threads(), "numba": numba.get_num_threads(),
                "spin": os.environ.get("GOMP_SPINCOUNT")}


def test_dataloader_workers_run_numba_on_torchs_count():
    """A worker runs torch on 1 thread (torch's rule) and numba on as many; the spin bound reached it."""
    code = ("import json, sys\n"
            f"sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n"
            "import pc3d\n"
            "from pc3d.engine.data import EpochBatchSampler, train_loader\n"
            "from test_threads import ThreadProbe\n"
            "loader = train_loader(ThreadProbe(), EpochBatchSampler(2, 1, shuffle=False), workers=1)\n"
            "print(json.dumps([s for batch in loader for s in batch]))\n")
    assert run(code) == [{"torch": 1, "numba": 1, "spin": SPIN_ENV.get("GOMP_SPINCOUNT")}] * 2
