"""numba's on-disk kernel cache under concurrent processes (pc3d_ops.numba_cache), and kernels that compute the
same numbers whether a process compiled them or loaded them from the cache (pc3d_ops.fma)."""
from __future__ import annotations

import fcntl
import multiprocessing
import os
import subprocess
import sys

import numpy as np
import pytest
from numba.core import types
from numba.core.caching import IndexDataCacheFile
from numba.core.typing.templates import Signature
from pc3d_ops import numba_cache  # importing it installs the locked save and the checked load


def cache_file(folder) -> IndexDataCacheFile:
    return IndexDataCacheFile(str(folder), "kernel-1.py311", source_stamp=("stamp", 1))


def key(i: int) -> tuple:
    """A cache key as numba's Cache builds it: (argument types, codegen magic, code hashes)."""
    return ((types.int64,) * (i + 1), ("x86_64", "cpu", ""), ("code", "cells"))


def payload(i: int) -> tuple:
    """Compile-result-shaped data: index 3 is the signature of key(i)."""
    return ("lib", "fndesc", "env", Signature(types.none, (types.int64,) * (i + 1), None), i)


def _save_keys(folder, keys):
    cache = cache_file(folder)
    for i in keys:
        cache.save(key(i), payload(i))


def test_concurrent_saves_never_cross_entries(tmp_path):
    """Four processes save 40 different signatures of one function at once (the race of two pytest
    workers compiling on a fresh checkout): every entry loads its own data."""
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_save_keys, args=(tmp_path, range(w, 40, 4))) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    cache = cache_file(tmp_path)
    loaded = {i: cache.load(key(i)) for i in range(40)}
    assert all(loaded[i] is not None and loaded[i][4] == i for i in range(40)), \
        {i: None if v is None else v[4] for i, v in loaded.items()}


def test_an_entry_naming_another_signatures_code_is_recompiled(tmp_path):
    """A cache corrupted by an unlocked writer (index: key 0 -> data of key 1) loads nothing, so numba
    compiles again instead of running the wrong machine code; save then repairs the entry."""
    cache = cache_file(tmp_path)
    cache.save(key(1), payload(1))
    overloads = cache._load_index()
    overloads[key(0)] = overloads[key(1)]
    cache._save_index(overloads)
    assert cache.load(key(1))[4] == 1
    assert cache.load(key(0)) is None
    cache.save(key(0), payload(0))
    assert cache.load(key(0))[4] == 0 and cache.load(key(1))[4] == 1


def test_package_kernels_go_stale_with_any_package_source(tmp_path, monkeypatch):
    """A kernel of pc3d_ops is stamped with the hash of every source of the package (it inlines its siblings'
    intrinsics, so an edit of bf16.py alone must recompile sparse_conv_bf16's kernels), code only: a reworded
    docstring or comment keeps the stamp; other cached functions keep numba's own stamp, the hash of their
    file."""
    import numba
    from pc3d_ops import sparse_conv_bf16

    kernel = sparse_conv_bf16.gather_gemm_scatter(16, False)
    assert kernel._cache._impl.locator.get_source_stamp() == numba_cache.package_digest()

    @numba.njit(cache=True)
    def outside(a):
        return a + 1

    assert outside._cache._impl.locator.get_source_stamp() != numba_cache.package_digest()

    source = '"""Module doc."""\n\ndef f(a):\n    """Doc."""\n    return a + 1  # one\n'
    for name in ("bf16.py", "sparse_conv_bf16.py"):
        (tmp_path / name).write_text(source)
    monkeypatch.setattr(numba_cache, "_PACKAGE", str(tmp_path))
    before = numba_cache.package_digest.__wrapped__()
    reworded = '"""Module doc, reworded."""\n\n\ndef f(a):\n    """Other doc."""\n    # a comment\n    return a + 1\n'
    (tmp_path / "bf16.py").write_text(reworded)
    assert numba_cache.package_digest.__wrapped__() == before  # docstrings, comments, lines: no recompile
    (tmp_path / "bf16.py").write_text(reworded.replace("a + 1", "a + 2"))
    assert numba_cache.package_digest.__wrapped__() != before
    (tmp_path / "bf16.py").write_text(reworded.replace("Other doc.", "Doc.") + "x = 'a string is code'\n")
    assert numba_cache.package_digest.__wrapped__() != before
    (tmp_path / "bf16.py").write_text("def broken(:\n")  # does not parse: its bytes are hashed
    assert numba_cache.package_digest.__wrapped__() != before
    # the memo (__pycache__/code_digest) answers for the sources it was written for and no others; a damaged
    # memo is recomputed
    (tmp_path / "bf16.py").write_text(source)
    memo = tmp_path / "__pycache__" / "code_digest"
    assert numba_cache.package_digest.__wrapped__() == before and memo.read_text().split()[1] == before
    memo.write_text("garbage")
    assert numba_cache.package_digest.__wrapped__() == before and memo.read_text().split()[1] == before
    memo.write_text(f"{memo.read_text().split()[0]} {'0' * 64}\n")  # a memo for these sources is trusted
    assert numba_cache.package_digest.__wrapped__() == "0" * 64


_FLOAT_KERNELS = """
import sys
import numpy as np
from pc3d_ops import sparse_conv as K
rng = np.random.default_rng(0)
n, kvol = 3000, 27
nbr = np.where(rng.random((n, kvol)) < 0.3, rng.integers(0, n, (n, kvol)), -1).astype(np.int32)
x, g = rng.standard_normal((n, 16), np.float32), rng.standard_normal((n, 24), np.float32)
w = rng.standard_normal((kvol, 1, 16, 24), np.float32)
out = np.zeros((n, 24), np.float32)
pairs = K.block_pairs(nbr, K.ROWS_PER_BLOCK)
K.gather_gemm_scatter(24)(x, w, *pairs, out, K.NO_KEEP)
partial = np.zeros((K.wgrad_tasks(n), kvol, 1, 16, 24), np.float32)
kernel = K.pair_weight_gradient(24, "float32")
kernel(x, g, *pairs, partial)
np.savez(sys.argv[1], out=out, dw=partial)
print(sum(kernel._cache_hits.values()))
"""


def test_a_cached_kernel_computes_what_the_compiling_process_computed(tmp_path):
    """numba compiles a parallel kernel's loop body twice (alone, and inside the kernel): the compiling process
    runs one copy, a process loading the cache the other. With fastmath's contract / reassoc the two rounded
    differently (the scalar-loop weight gradient the engine once had, by up to 3e-5 on values of ~100); written
    with `fma` they agree, and so must the micro-kernels' (a 24-wide forward and weight gradient here)."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    hits = [subprocess.run([sys.executable, "-c", _FLOAT_KERNELS, str(tmp_path / f"run{i}.npz")], env=env, check=True,
                           capture_output=True, text=True).stdout.split()[-1] for i in range(2)]
    assert hits == ["0", "1"]  # the first run compiled, the second loaded the first's code
    first, second = np.load(tmp_path / "run0.npz"), np.load(tmp_path / "run1.npz")
    for name in ("out", "dw"):
        np.testing.assert_array_equal(first[name], second[name])


def test_a_stopped_compile_lock_holder_is_waited_for_a_bounded_time(tmp_path, monkeypatch):
    """A process holding a kernel's compile lock while stopped (Ctrl-Z) or hung must not block the others
    forever: past PC3D_COMPILE_WAIT they compile unlocked, with a warning naming the holder."""
    path = str(tmp_path / "kernel.abc.compile.lock")
    with numba_cache._compile_lock(path, "kernel(int64,)"):  # free: taken at once, our pid written
        assert open(path).read() == str(os.getpid())
    monkeypatch.setenv(numba_cache.COMPILE_WAIT_ENV, "0.3")
    with open(path, "a+b") as other:  # another open file: flock conflicts with it as with another process
        fcntl.flock(other, fcntl.LOCK_EX)
        os.ftruncate(other.fileno(), 0)
        other.write(b"4242")
        other.flush()
        ran = []
        with pytest.warns(RuntimeWarning, match=r"process 4242 has held the compile lock of kernel\(int64,\)"):
            with numba_cache._compile_lock(path, "kernel(int64,)"):
                ran.append(True)
        assert ran == [True]
        fcntl.flock(other, fcntl.LOCK_UN)
    monkeypatch.setenv(numba_cache.COMPILE_WAIT_ENV, "soon")
    with pytest.warns(RuntimeWarning, match="PC3D_COMPILE_WAIT='soon'"):
        assert numba_cache._compile_wait() == numba_cache.DEFAULT_COMPILE_WAIT
