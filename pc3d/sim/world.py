"""A world snapshot: every primitive at one instant, binned into a BEV grid, ready for ray casting."""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from pc3d_ops import raycast as _k
from pc3d_ops.threads import use_threads

PARALLEL_MIN_RAYS = 20000


@dataclass
class World:
    """Primitives at one instant (world frame, z up).

    rows float64 [P, 16]; semantic int32 [P] (SemanticKITTI raw id); reflectivity float32 [P];
    actor int32 [P] (index into the scene's actors, -1 for static scenery).
    """

    rows: np.ndarray
    semantic: np.ndarray
    reflectivity: np.ndarray
    actor: np.ndarray
    cell: float = 4.0
    big: float = 100.0

    def __post_init__(self) -> None:
        self.rows = np.ascontiguousarray(self.rows, dtype=np.float64)
        bounds = _k.bev_bounds(self.rows)
        # planes and primitives longer than BIG metres are tested once per ray instead of per cell
        big = ~np.isfinite(bounds[:, 0]) | (bounds[:, 3:5] - bounds[:, 0:2] > self.big).any(axis=1)
        self.always = np.flatnonzero(big).astype(np.int32)
        bounds[big] = np.inf
        finite = ~big
        if finite.any():
            lo = bounds[finite, :3].min(axis=0) - 1e-3
            hi = bounds[finite, 3:].max(axis=0) + 1e-3
        else:
            lo, hi = np.zeros(3), np.full(3, self.cell)
        nx = max(1, int(np.ceil((hi[0] - lo[0]) / self.cell)))
        ny = max(1, int(np.ceil((hi[1] - lo[1]) / self.cell)))
        self.grid = np.array([lo[0], lo[1], self.cell, nx, ny, lo[2], hi[2]], dtype=np.float64)
        self.cell_start, self.cell_items, self.cell_top = _k.build_grid(bounds, lo[0], lo[1], self.cell, nx, ny)

    def __len__(self) -> int:
        return len(self.rows)

    def cast(self, origins: np.ndarray, dirs: np.ndarray, max_range: float) -> tuple[np.ndarray, ...]:
        """First hits of rays: range float64 [R] (inf: none), primitive int32 [R] (-1), cos incidence [R]."""
        kernel = _k.cast_rays_serial
        if len(origins) >= PARALLEL_MIN_RAYS:
            use_threads(numba.config.NUMBA_NUM_THREADS)
            kernel = _k.cast_rays
        return kernel(np.ascontiguousarray(origins, dtype=np.float64), np.ascontiguousarray(dirs, dtype=np.float64),
                      float(max_range), self.rows, self.always, self.cell_start, self.cell_items, self.cell_top,
                      self.grid)

    def cast_own(self, origins: np.ndarray, dirs: np.ndarray, actors: np.ndarray, max_range: float) -> np.ndarray:
        """Range float64 [R] (inf: none) of each ray against only the parts of its actor (int [R])."""
        order = np.argsort(self.actor, kind="stable").astype(np.int32)
        start = np.searchsorted(self.actor[order], np.arange(-1, self.actor.max() + 2)).astype(np.int64)
        rng, _ = _k.cast_groups(np.ascontiguousarray(origins, dtype=np.float64),
                                np.ascontiguousarray(dirs, dtype=np.float64), float(max_range), self.rows,
                                start, order, np.asarray(actors, np.int64) + 1)
        return rng

    def cast_sweep(self, pose_start: np.ndarray, pose_end: np.ndarray, inclinations: np.ndarray,
                   azimuths: np.ndarray, distort: bool, max_range: float) -> tuple[np.ndarray, ...]:
        """A spinning sweep (see pc3d_ops.raycast.cast_sweep): range, primitive, cos incidence, hit points."""
        use_threads(numba.config.NUMBA_NUM_THREADS)
        f64 = np.float64
        return _k.cast_sweep(np.ascontiguousarray(pose_start, f64), np.ascontiguousarray(pose_end, f64),
                             np.ascontiguousarray(inclinations, f64), np.ascontiguousarray(azimuths, f64),
                             bool(distort), float(max_range), self.rows, self.always, self.cell_start,
                             self.cell_items, self.cell_top, self.grid)
