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
index names, which also repairs a cache that an unlocked writer corrupted before. Where ``fcntl``
is missing (Windows) saving stays unlocked.
"""
from __future__ import annotations

import contextlib
import itertools

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

from numba.core.caching import IndexDataCacheFile

_original_load = IndexDataCacheFile.load


@contextlib.contextmanager
def _locked(index_path: str):
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(index_path + ".lock", "a+b") as lock:
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


def install() -> None:
    """Patch numba's cache file class (idempotent)."""
    IndexDataCacheFile.save = _save
    IndexDataCacheFile.load = _load


install()
