"""Shared fixtures: paths to the real samples beside the checkout, seeded generators."""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs two workers on two cores: one thread each, no
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # oversubscription (set before torch is imported)
    os.environ.setdefault("NUMBA_NUM_THREADS", str(os.cpu_count() or 1))  # a pool a test can widen to 2 ...
    import pc3d  # noqa: F401  (the thread policy's environment, before torch loads libgomp)

    # isort: split
    import torch
    from pc3d_ops.threads import use_threads

    use_threads(torch.get_num_threads())  # ... launched now at one thread: numba's lazy launch, at the first
    # kernel, would set torch's count to the pool's size, and every worker would run two threads

# CI and `make test` draw the same examples every run (a red run is reproducible, never a dice roll);
# `pytest --hypothesis-profile=explore` draws fresh random ones to hunt for new failures.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile("repeatable")

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "samples"


@contextlib.contextmanager
def torch_threads(n: int):
    """torch (and so pc3d's kernels, which follow it) on n threads inside the block, at most the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(n, os.cpu_count() or 1)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def sample_path(relative: str) -> Path:
    """Path of a real sample under ../shared/samples, or skip the test with the reason."""
    path = SAMPLES / relative
    if not path.exists():
        pytest.skip(f"real sample {path} is absent (it lives in ../shared/samples beside the checkout)")
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: end-to-end tests that train or run long")


def random_sparse(shape, channels, *, batch=2, occupancy=0.3, empty=None, seed=0):
    """float32 SparseTensor on shuffled random sites of a [batch, *shape] grid; sample `empty` has none."""
    import torch

    from pc3d.sparse import SparseTensor

    rng = np.random.default_rng(seed)
    mask = rng.random((batch, *shape)) < occupancy
    if empty is not None:
        mask[empty] = False
    coords = np.argwhere(mask).astype(np.int32)
    coords = coords[rng.permutation(len(coords))]
    feats = rng.standard_normal((len(coords), channels)).astype(np.float32)
    return SparseTensor(torch.from_numpy(feats), torch.from_numpy(coords), shape, batch)


def experiment_checkpoint(folder: Path, experiment: str, *overrides: str) -> Path:
    """tools/_common.py's: a checkpoint of the experiment's seeded, untrained model with its resolved config."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from _common import experiment_checkpoint as write

    return write(folder, experiment, *overrides)
