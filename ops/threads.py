"""Thread settings of the numba kernels, applied at call time (never on import)."""
from __future__ import annotations

import numba


def use_threads(n: int) -> None:
    """Run the parallel kernels on n threads (capped at numba's pool size).

    Before numba's first parallel launch, prefer its OpenMP layer (torch ships libgomp) over a
    TBB that may be too old to load, unless the user chose a layer with NUMBA_THREADING_LAYER.
    """
    if numba.config.THREADING_LAYER == "default":
        numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]
    want = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != want:
        numba.set_num_threads(want)
