"""Seeds and random-number-generator states.

Every random stream a run touches is either seeded from the run's `seed` or saved in its
checkpoints, so a resumed run continues bit for bit:

- the main process's python / numpy / torch (and CUDA) generators: `seed_everything(seed + rank)`
  at start, `rng_state()` into each checkpoint, `set_rng_state()` on resume;
- data augmentation: `pc3d.engine.data.SeededDataset` reseeds the three global generators before
  every sample from `sample_seed(seed, epoch, index)` (defined in pc3d.utils.seeding, which
  pc3d.data shares), so a sample's augmentation depends on neither the worker that loads it, the
  number of workers or ranks, nor where a run was resumed.

`rng_state()` stores everything as tensors, lists and numbers, so checkpoints load with
`torch.load(weights_only=True)`.
"""
from __future__ import annotations

import random

import numpy as np
import torch

from pc3d.utils.seeding import sample_seed

__all__ = ["rng_state", "sample_seed", "seed_everything", "seed_globals", "set_rng_state"]


def seed_globals(seed: int) -> None:
    """Seed python's, numpy's and torch's global CPU generators (fast path, a few microseconds)."""
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)  # noqa: NPY002 - seeding the legacy global generator is the point
    torch.default_generator.manual_seed(seed)


def seed_everything(seed: int) -> None:
    """Seed python, numpy, torch and every CUDA device."""
    seed_globals(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """The global generators' states as tensors / lists / numbers (loadable with weights_only=True)."""
    version, mt, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    state = {
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state()` returned."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"],  # noqa: NPY002
                         npst["has_gauss"], npst["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
