"""The thread policy of every pc3d process: one thread count for numba and torch, bounded spin-waits.

One count. A process runs numba's parallel kernels on as many threads as torch runs its own
(`torch.get_num_threads()`; DataLoader workers: 1, which torch sets in each worker). The
`PC3D_THREADS` environment variable chooses that count for torch and numba alike; without it torch's
default stands (`OMP_NUM_THREADS`, else one thread per core). numba launches its OpenMP pool at the
first parallel kernel, and the launch sets the launching thread's OpenMP count -- torch's count -- to
the pool's size (NUMBA_NUM_THREADS, the cores unless set): a process that lowers torch's count must
launch the pool first (`use_threads`, which puts torch's count back), or one voxelizer call later it
runs torch and numba on every core again. PC3D_THREADS, else OMP_NUM_THREADS, sizes the pool
(`apply_env_defaults`) and a run's `threads: N` launches it (`pc3d.engine.runner.apply_threads`); found
when two trainings at `threads=1` each ran two threads on 2 cores, about 2x slower per step than they
should (and each pytest worker of `make test`, at OMP_NUM_THREADS=1, ran two).

Bounded spinning. torch's intra-op parallelism and numba's `omp` threading layer run on the same
GNU OpenMP runtime (libgomp: torch's wheel ships it, numba's omppool links the same soname, so one
copy and one pool of threads is loaded). A libgomp thread that waits -- a worker between two
parallel regions, a thread at a region's closing barrier -- spins `GOMP_SPINCOUNT` times before it
sleeps on a futex; unset, that is 300,000 `pause` loops (about 3 ms, longer on cores with a slow
`pause`) after *every* region. Alone on its cores that spin is cheap; with a second busy process on
the same cores, the spinning threads take the time slices the other process's working threads need,
and both crawl (10x per step measured on 2 cores). pc3d bounds the spin (`SPIN_ENV`); libgomp reads
it once, when it is loaded, so `apply_env_defaults` runs on `import pc3d`, before torch or numba
load libgomp, and entry points import pc3d before torch. A variable the user set is never changed.

numpy's BLAS: one thread. numpy's wheel bundles OpenBLAS with a pthreads pool of its own (one thread per
core). After a threaded call (a matmul over a cloud: a camera projection, a pose applied to a scan) its idle
threads spin for a while before they sleep, on the cores torch's and numba's OpenMP threads need: a few
such calls per batch in the training process made `centerpoint_sim_kitti` 20 % slower per step (bf16: 3.7
against 4.45 steps/s with OPENBLAS_NUM_THREADS=1, 2 cores). pc3d's array work runs in numba kernels, so
numpy's BLAS gets one thread (`BLAS_ENV`, and `limit_loaded_openblas` for a library already loaded);
a user's OPENBLAS_NUM_THREADS is left as it is.

numba's layer is `omp` (TBB is not installed with the wheels, and a second, `workqueue` pool would put
two sets of threads on the cores); `NUMBA_THREADING_LAYER` overrides it.

This module imports only the standard library at import time (numba and torch are imported where used).
"""
from __future__ import annotations

import ctypes
import os
import sys
import warnings

# Spin a few microseconds instead of 3+ ms before sleeping: long enough to bridge the gaps between the
# parallel regions of one layer, short enough not to starve another process. Two det processes on 2 cores
# (issue #16): 2.6-3.0x their time alone at 10,000 on an AVX2 EPYC, 1.4-1.7x at 2,000, alone unchanged.
SPIN_ENV = {"GOMP_SPINCOUNT": "2000"}
# Variables whose presence means the user chose the wait policy: SPIN_ENV is then left out entirely.
USER_SPIN_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
# OpenBLAS (numpy's, scipy's) on one thread, unless the user set this variable.
BLAS_ENV = {"OPENBLAS_NUM_THREADS": "1"}
# the thread-count setters of OpenBLAS builds: numpy / scipy wheels' (64-bit ints, prefixed), then plain
_OPENBLAS_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                     "openblas_set_num_threads64_", "openblas_set_num_threads")


def env_threads(environ=None) -> int | None:
    """The thread count PC3D_THREADS asks for (None: unset); an invalid value warns and is ignored."""
    value = (os.environ if environ is None else environ).get("PC3D_THREADS", "").strip()
    if not value:
        return None
    if value.isdigit() and int(value) >= 1:
        return int(value)
    warnings.warn(f"PC3D_THREADS={value!r} is not a positive integer; ignored", RuntimeWarning, stacklevel=2)
    return None


def omp_threads(environ=None) -> int | None:
    """The outermost count of OMP_NUM_THREADS ("4" or "4,2"), None when unset or not a positive integer."""
    value = (os.environ if environ is None else environ).get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(value) if value.isdigit() and int(value) >= 1 else None


def libgomp_loaded() -> bool:
    """Whether this process has loaded GNU OpenMP already (its environment is read then, and only then)."""
    try:
        with open("/proc/self/maps") as f:
            return "libgomp" in f.read()
    except OSError:  # not Linux: assume the worst once torch or numba's OpenMP pool is in
        return "torch" in sys.modules or "numba.np.ufunc.omppool" in sys.modules


def apply_env_defaults(environ=None) -> dict[str, str]:
    """Set the policy's environment before libgomp and numba load; returns the variables it set.

    A variable the user set is never changed. The OpenMP ones (GOMP_SPINCOUNT, and OMP_NUM_THREADS =
    PC3D_THREADS, torch's count at import) only while libgomp is not loaded (it reads them once);
    NUMBA_NUM_THREADS = PC3D_THREADS, else OMP_NUM_THREADS, only while numba is not imported: numba
    launches its OpenMP pool lazily, at the first parallel kernel, and that launch sets the launching
    thread's OpenMP count, the one torch reports, to the pool's size (the cores, unset). If torch is
    imported already, its count is set directly.
    """
    environ = os.environ if environ is None else environ
    threads = env_threads(environ)
    torch = sys.modules.get("torch")
    if threads is not None and torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    wanted = {}
    pool = threads if threads is not None else omp_threads(environ)
    if pool is not None and "numba" not in sys.modules:
        wanted["NUMBA_NUM_THREADS"] = str(pool)
    if not libgomp_loaded():
        if not any(v in environ for v in USER_SPIN_VARS):
            wanted.update(SPIN_ENV)
        if threads is not None:
            wanted["OMP_NUM_THREADS"] = str(threads)
    applied = {k: v for k, v in wanted.items() if k not in environ}
    environ.update(applied)
    return applied


def limit_blas_threads(environ=None) -> dict[str, str]:
    """numpy's BLAS on one thread (`BLAS_ENV`, see the module docstring), unless the user set
    OPENBLAS_NUM_THREADS: the variable for libraries loaded later and for child processes, and the
    setter of every OpenBLAS this process has loaded already. Returns the variables it set."""
    environ = os.environ if environ is None else environ
    applied = {k: v for k, v in BLAS_ENV.items() if k not in environ}
    if not applied:
        return {}
    environ.update(applied)
    limit_loaded_openblas(int(BLAS_ENV["OPENBLAS_NUM_THREADS"]))
    return applied


def loaded_openblas() -> list[str]:
    """Paths of the OpenBLAS libraries loaded in this process (Linux; [] elsewhere)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.rsplit("/", 1)[-1].lower()}
    except OSError:
        return []
    return sorted(p for p in paths if p.startswith("/"))


def limit_loaded_openblas(n: int) -> int:
    """Set the thread count of every loaded OpenBLAS to n; returns how many libraries took it."""
    done = 0
    for path in loaded_openblas():
        try:
            lib = ctypes.CDLL(path)  # already mapped: the same handle, nothing loads
        except OSError:
            continue
        for name in _OPENBLAS_SETTERS:
            setter = getattr(lib, name, None)
            if setter is not None:
                setter.argtypes = [ctypes.c_int]
                setter(n)
                done += 1
                break
    return done


def process_threads() -> int:
    """This process's thread count: torch's where torch is imported, else PC3D_THREADS, else numba's pool."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.get_num_threads()
    threads = env_threads()
    if threads is not None:
        return threads
    import numba

    return numba.config.NUMBA_NUM_THREADS


def use_threads(n: int) -> None:
    """Run the numba kernels on min(n, this process's count) threads (see `process_threads`); leaves
    torch's count as it was.

    Before numba's first parallel launch, prefer its OpenMP layer (torch ships libgomp) over a
    TBB that may be too old to load, unless the user chose a layer with NUMBA_THREADING_LAYER.
    numba's first launch of the OpenMP pool resets the OpenMP thread count torch reports; it is put back.
    """
    import numba

    torch = sys.modules.get("torch")
    torch_threads = torch.get_num_threads() if torch is not None else None
    if numba.config.THREADING_LAYER == "default":
        numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]
    cap = torch_threads if torch_threads is not None else process_threads()
    want = max(1, min(int(n), cap, numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != want:
        numba.set_num_threads(want)
    if torch_threads is not None and torch.get_num_threads() != torch_threads:
        torch.set_num_threads(torch_threads)
