"""Rigid registration of two point clouds: surface normals and point-to-plane ICP.

    surface_normals(points, k)                      -> [N, 3] unit normals: the least-variance direction of each
                                                       point's k nearest neighbours (sign arbitrary)
    point_to_plane_icp(source, target, rotation, translation, ...)
                                                    -> (R [3, 3], t [3], IcpStats): the rigid motion taking source
                                                       onto target's surfaces, refined from the given start

Each ICP step pairs every moved source point with its nearest target point (farther than `max_distance`:
no pair), and solves the linearised point-to-plane problem
    min_x  sum_i w_i (n_i . (R p_i + t - q_i) + (R p_i x n_i) . omega + n_i . v)^2 + damping |x|^2,  x = (omega, v)
with Cauchy weights w_i = 1 / (1 + (r_i / scale)^2) on the plane distances r_i; the step rotates by exp(omega)
and translates by v on the left. Damping keeps directions the surfaces do not constrain (a wall seen sliding
along itself) where the start put them, instead of letting them drift. Stops when the step is below
`tolerance` (radians + metres) or after `iters` steps. Everything in float64, numpy in, numpy out.
Deterministic: nearest neighbours are exact (pc3d.geometry.knn) and there is no sampling.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pc3d.errors import ConfigError

from ._arrays import check_points
from .neighbors import knn


@dataclass(frozen=True)
class IcpStats:
    """steps: ICP steps taken; pairs: source points paired in the last step; rms: weighted RMS plane distance of
    the last step (metres); converged: the last step was below the tolerance."""

    steps: int
    pairs: int
    rms: float
    converged: bool


def surface_normals(points: Any, k: int = 10) -> np.ndarray:
    """float64 [N, 3] unit normals of [N, 3+] points from their k nearest neighbours (themselves included)."""
    xyz = np.asarray(check_points(points, "points")[:, :3], np.float64)
    if len(xyz) < 3:
        raise ConfigError(f"normals need at least 3 points, got {len(xyz)}")
    _, idx = knn(xyz, xyz, min(k, len(xyz)))
    neighbours = xyz[idx]                                   # [N, k, 3]
    centred = neighbours - neighbours.mean(1, keepdims=True)
    _, vectors = np.linalg.eigh(np.einsum("nki,nkj->nij", centred, centred))
    return vectors[:, :, 0]                                 # eigenvalues ascending: the least-variance axis


def _rotation_of(omega: np.ndarray) -> np.ndarray:
    """exp of the skew matrix of omega (Rodrigues)."""
    angle = float(np.linalg.norm(omega))
    if angle < 1e-12:
        return np.eye(3)
    axis = omega / angle
    skew = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * skew + (1 - np.cos(angle)) * skew @ skew


def point_to_plane_icp(source: Any, target: Any, rotation: Any = None, translation: Any = None, *,
                       target_normals: np.ndarray | None = None, max_distance: float = 1.0, scale: float = 0.1,
                       damping: float = 1e-3, iters: int = 30, tolerance: float = 1e-6
                       ) -> tuple[np.ndarray, np.ndarray, IcpStats]:
    """(R, t, stats) with R source + t on target's surfaces, from (rotation, translation) (identity when None).

    source [N, 3+], target [M, 3+] points; target_normals: [M, 3] (computed when None); max_distance: metres
    beyond which a nearest target point is no pair; scale: the Cauchy weights' scale (metres); damping: the
    ridge term, relative to the mean weight (see the module docstring)."""
    src = np.asarray(check_points(source, "source")[:, :3], np.float64)
    tgt = np.asarray(check_points(target, "target")[:, :3], np.float64)
    if len(src) < 6 or len(tgt) < 3:
        raise ConfigError(f"ICP needs at least 6 source and 3 target points, got {len(src)} and {len(tgt)}")
    normals = surface_normals(tgt) if target_normals is None else np.asarray(target_normals, np.float64)
    rot = np.eye(3) if rotation is None else np.asarray(rotation, np.float64).copy()
    trans = np.zeros(3) if translation is None else np.asarray(translation, np.float64).copy()
    stats = IcpStats(0, 0, float("nan"), False)
    for step in range(1, iters + 1):
        moved = src @ rot.T + trans
        dist2, idx = knn(moved, tgt, 1)
        paired = dist2[:, 0] < max_distance**2
        if paired.sum() < 6:
            return rot, trans, IcpStats(step, int(paired.sum()), float("nan"), False)
        p, q, n = moved[paired], tgt[idx[paired, 0]], normals[idx[paired, 0]]
        r = ((p - q) * n).sum(1)
        w = 1.0 / (1.0 + (r / scale) ** 2)
        jac = np.concatenate([np.cross(p, n), n], 1)        # d r / d (omega, v)
        lhs = (jac * w[:, None]).T @ jac + damping * w.sum() * np.eye(6)
        x = -np.linalg.solve(lhs, (jac * w[:, None]).T @ r)
        step_rot = _rotation_of(x[:3])
        rot, trans = step_rot @ rot, step_rot @ trans + x[3:]
        converged = float(np.abs(x).sum()) < tolerance
        stats = IcpStats(step, int(paired.sum()), float(np.sqrt((w * r * r).sum() / w.sum())), converged)
        if converged:
            break
    return rot, trans, stats
