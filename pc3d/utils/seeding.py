"""Per-sample seeds: one cheap, well-spread mix of integers, shared by datasets and the engine.

A sample's augmentation seed is ``sample_seed(run seed, epoch, index)``, so it depends on neither
the DataLoader worker that loads it nor the number of ranks (pc3d.engine.seeding has the rest of
the run's seeding and RNG states).
"""
from __future__ import annotations

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def sample_seed(*parts: int) -> int:
    """A 32-bit seed mixed from integers (e.g. run seed, epoch, sample index); cheap and well spread."""
    h = 0
    for p in parts:
        h = _splitmix64(h ^ (int(p) & _MASK64))
    return h & 0xFFFFFFFF
