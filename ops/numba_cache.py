"""numba's on-disk cache made safe for processes that compile the same kernels at the same time.

numba 0.68 saves a compiled overload by reading the function's index (``<name>.nbi``: signature ->
data file), taking the first free data-file number, writing the index and then the data
(``<name>.<n>.nbc``), with no lock. Two processes compiling different signatures of one kernel at
once (the pytest workers of ``make test`` on a fresh checkout, DataLoader workers, two trainings)
both take number n: one index entry ends up naming the other process's machine code, and every
later run loads, say, the float32 kernel for float64 arrays: wrong numbers or a corrupted heap.

``install()`` replaces ``IndexDataCacheFile.save`` with one that holds an exclusive ``flock`` on
``<name>.nbi.lock`` while it re-reads the index, picks a number and writes data then index, and
``load`` with one that drops (recompiles) an entry whose data holds another signature than the
index names, which also repairs a cache that an unlocked writer corrupted before.

It also wraps ``Dispatcher.compile`` so that one process compiles a given kernel and signature while
the others wait for it and then load its result from the cache: on a fresh checkout the two pytest
workers (or a trainer and its DataLoader workers) need mostly the same specialisations, and each costs
about 3 s of LLVM. The lock is per index key (``<name>.<key hash>.compile.lock`` beside the index), so
different kernels still compile side by side; nested compiles take their callees' locks, and the call
graph has no cycles, so two processes cannot wait on each other. A holder that is stopped (Ctrl-Z) or hung
is waited for at most ``PC3D_COMPILE_WAIT`` seconds (300; a warning names its pid after 30), then the kernel
compiles unlocked. ``PC3D_COMPILE_LOG=<file>`` appends one line per compile (pid, kernel, seconds) for
measuring. Where ``fcntl`` is missing (Windows) saving and compiling stay unlocked.

Freshness: numba keeps a cached kernel while the hash of the file that defines it is unchanged, but these
kernels inline micro-kernels and intrinsics from their sibling modules (``bf16.dot_packed`` into
``sparse_conv_bf16``, ``microkernel.mac_rows`` into ``sparse_conv``): after an edit of ``bf16.py`` alone, numba
would go on loading machine code built from the old intrinsic. ``install()`` makes the stamp of every kernel
defined in this package the hash of all the package's sources, so an edit of any of them recompiles them all
(the code of them: docstrings and comments are left out of the hash; numba still names a kernel's cache files
by its line number, so an edit that moves lines recompiles the kernels below it in that file, and no others).
"""
from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import itertools
import os
import time
import warnings

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

from numba.core.caching import Cache, IndexDataCacheFile, _SourceFileBackedLocatorMixin
from numba.core.dispatcher import Dispatcher

_original_load = IndexDataCacheFile.load
_original_compile = Dispatcher.compile
_original_stamp = _SourceFileBackedLocatorMixin.get_source_stamp
_PACKAGE = os.path.dirname(os.path.abspath(__file__))  # pc3d_ops: the kernels whose stamp is package_digest()


@contextlib.contextmanager
def _locked(index_path: str, suffix: str = ".lock"):
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(index_path + suffix, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _save(self, key, data):
    with _locked(self._index_path):
        overloads = self._load_index()
        data_name = overloads.get(key)
        if data_name is None or list(overloads.values()).count(data_name) > 1:  # new, or shared by a corrupt entry
            taken = set(overloads.values())
            data_name = next(n for n in map(self._data_name, itertools.count(1)) if n not in taken)
            overloads[key] = data_name
        self._save_data(data_name, data)  # data before index: an entry never names a file not yet written
        self._save_index(overloads)


def _stored_signature(data):
    """The argument types a compile result was built for (``CompileResult._reduce``: index 3), or None."""
    try:
        signature = data[3]
        return tuple(signature.args)
    except (TypeError, IndexError, AttributeError):
        return None


def _load(self, key):
    data = _original_load(self, key)
    if data is None:
        return None
    stored = _stored_signature(data)
    wanted = key[0] if isinstance(key, tuple) and key and isinstance(key[0], tuple) else None
    if stored is not None and wanted is not None and stored != tuple(wanted):
        return None  # another signature's code under this key: compile afresh (save then replaces it)
    return data


COMPILE_WAIT_ENV = "PC3D_COMPILE_WAIT"
DEFAULT_COMPILE_WAIT = 300.0  # seconds; a compile takes 3-5 s, a kernel with nested compiles under a minute
NOTICE_AFTER = 30.0  # seconds of waiting before saying so


def _compile_wait() -> float:
    value = os.environ.get(COMPILE_WAIT_ENV)
    try:
        return DEFAULT_COMPILE_WAIT if value is None else max(0.0, float(value))
    except ValueError:
        warnings.warn(f"{COMPILE_WAIT_ENV}={value!r} is not a number of seconds; using {DEFAULT_COMPILE_WAIT:.0f}",
                      RuntimeWarning, stacklevel=3)
        return DEFAULT_COMPILE_WAIT


@contextlib.contextmanager
def _compile_lock(path: str, what: str):
    """Hold the compile lock at `path` for the body, waiting for it at most PC3D_COMPILE_WAIT seconds (default
    300). A holder that is stopped (Ctrl-Z) or hung would otherwise keep every other process waiting at this
    kernel forever, silently. Past the wait the body runs unlocked, with a warning naming the holder's pid
    (each holder writes it into the file): the kernel is compiled twice, and the cache stays consistent (its
    save takes its own lock)."""
    with open(path, "a+b") as lock:
        def holder() -> str:
            lock.seek(0)
            return lock.read().decode(errors="replace").strip() or "unknown"

        start, wait, told = time.monotonic(), _compile_wait(), False
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - start
                if waited >= wait:
                    warnings.warn(f"process {holder()} has held the compile lock of {what} for over {wait:.0f} s "
                                  f"(stopped or hung?); compiling here without it ({path}; {COMPILE_WAIT_ENV} sets "
                                  "the wait)", RuntimeWarning, stacklevel=4)
                    yield
                    return
                if waited >= NOTICE_AFTER and not told:
                    warnings.warn(f"waiting for process {holder()} to finish compiling {what} (up to {wait:.0f} s, "
                                  f"{COMPILE_WAIT_ENV} sets it)", RuntimeWarning, stacklevel=4)
                    told = True
                time.sleep(0.02)
        try:
            os.ftruncate(lock.fileno(), 0)
            lock.write(str(os.getpid()).encode())
            lock.flush()
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _compile(self, sig):
    cache = self._cache
    if not isinstance(cache, Cache) or fcntl is None:  # not cached: nothing to share
        return _original_compile(self, sig)
    key = cache._index_key(sig, self.targetctx.codegen())
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
    index_path = cache._cache_file._index_path
    log = os.environ.get("PC3D_COMPILE_LOG")
    with _compile_lock(f"{index_path[:-len('.nbi')]}.{digest}.compile.lock", f"{self.py_func.__qualname__}{sig}"):
        misses = sum(self._cache_misses.values())
        start = time.perf_counter()
        entry = _original_compile(self, sig)  # loads what another process saved meanwhile, else compiles
        if log and sum(self._cache_misses.values()) > misses:
            with open(log, "a") as out:
                out.write(f"{os.getpid()} {os.path.basename(index_path)} {digest} {time.perf_counter() - start:.2f}\n")
        return entry


def _code_of(source: bytes) -> bytes:
    """What of a source file can change machine code: its syntax tree without docstrings (comments, blank lines
    and line numbers are not in it), or the bytes themselves where they do not parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return source
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree).encode()


@functools.cache
def package_digest() -> str:
    """sha256 of this package's .py sources (names and code without docstrings or comments, in name order), read
    once per process: any change of code recompiles every kernel, a reworded docstring or comment none (beyond
    the kernels whose line it moves). Parsing the sources costs ~0.2 s, which every process importing a kernel
    would pay: the result is kept in ``__pycache__/code_digest`` under the hash of the raw sources (~1 ms)."""
    sources = {}
    for name in sorted(os.listdir(_PACKAGE)):
        if name.endswith(".py"):
            with open(os.path.join(_PACKAGE, name), "rb") as f:
                sources[name] = f.read()
    raw = hashlib.sha256(b"".join(name.encode() + hashlib.sha256(text).digest()
                                  for name, text in sources.items())).hexdigest()
    memo = os.path.join(_PACKAGE, "__pycache__", "code_digest")
    try:
        with open(memo) as f:
            seen_raw, seen_code = f.read().split()
        if seen_raw == raw:
            return seen_code
    except (OSError, ValueError):
        pass
    digest = hashlib.sha256()
    for name, text in sources.items():
        digest.update(name.encode())
        digest.update(hashlib.sha256(_code_of(text)).digest())
    code = digest.hexdigest()
    try:  # written whole then renamed: a concurrent reader sees the old memo or the new one
        os.makedirs(os.path.dirname(memo), exist_ok=True)
        tmp = f"{memo}.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(f"{raw} {code}\n")
        os.replace(tmp, memo)
    except OSError:  # a read-only install: parse every time
        pass
    return code


def _source_stamp(self):
    if os.path.dirname(os.path.abspath(self._py_file)) == _PACKAGE:
        return package_digest()
    return _original_stamp(self)


def install() -> None:
    """Patch numba's cache file class and dispatcher (idempotent)."""
    IndexDataCacheFile.save = _save
    IndexDataCacheFile.load = _load
    Dispatcher.compile = _compile
    _SourceFileBackedLocatorMixin.get_source_stamp = _source_stamp


install()
