"""Analytic primitives of the simulated world as rows of the ray caster's table.

A primitive row is float64 [16]: type, centre (3), rotation local -> world (3x3 row-major), half
extents (3); see ``pc3d_ops.raycast``. A ``Parts`` bundle carries rows plus, per row, the
SemanticKITTI raw id and the material reflectivity (0..1).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pc3d_ops.raycast import BOX, CYLINDER, ELLIPSOID, PLANE

ROW = 16


def rot_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rot_y(pitch: float) -> np.ndarray:
    c, s = np.cos(pitch), np.sin(pitch)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_x(roll: float) -> np.ndarray:
    c, s = np.cos(roll), np.sin(roll)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _row(kind: int, centre, rotation, half) -> np.ndarray:
    row = np.empty(ROW)
    row[0] = kind
    row[1:4] = centre
    row[4:13] = np.asarray(rotation, dtype=np.float64).ravel()
    row[13:16] = half
    return row


def box(centre, size, rotation=None) -> np.ndarray:
    """Oriented box of full size (dx, dy, dz) about centre; rotation [3, 3] local -> world (default I)."""
    return _row(BOX, centre, np.eye(3) if rotation is None else rotation, np.asarray(size, dtype=np.float64) / 2)


def cylinder(centre, radius: float, length: float, rotation=None) -> np.ndarray:
    """Capped cylinder along its local z (vertical by default) of the given radius and full length."""
    return _row(CYLINDER, centre, np.eye(3) if rotation is None else rotation, (radius, radius, length / 2))


def ellipsoid(centre, radii, rotation=None) -> np.ndarray:
    return _row(ELLIPSOID, centre, np.eye(3) if rotation is None else rotation, radii)


def plane(point, normal) -> np.ndarray:
    """Infinite plane through point; rays hit it from the side the normal points to."""
    n = np.asarray(normal, dtype=np.float64)
    n = n / np.linalg.norm(n)
    helper = np.array([1.0, 0.0, 0.0]) if abs(n[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = np.cross(helper, n)
    u /= np.linalg.norm(u)
    rotation = np.stack([u, np.cross(n, u), n], axis=1)
    return _row(PLANE, point, rotation, (0.0, 0.0, 0.0))


def transform_rows(rows: np.ndarray, rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """Rows [P, 16] moved by the rigid map x -> rotation @ x + translation."""
    out = rows.copy()
    out[:, 1:4] = rows[:, 1:4] @ rotation.T + translation
    local = rows[:, 4:13].reshape(-1, 3, 3)
    out[:, 4:13] = (rotation[None] @ local).reshape(-1, 9)
    return out


@dataclass
class Parts:
    """Primitive rows [P, 16] with their SemanticKITTI raw ids int32 [P] and reflectivities float32 [P]."""

    rows: np.ndarray
    semantic: np.ndarray
    reflectivity: np.ndarray

    @staticmethod
    def build(items: list[tuple[np.ndarray, int, float]]) -> Parts:
        if not items:
            return Parts(np.zeros((0, ROW)), np.zeros(0, np.int32), np.zeros(0, np.float32))
        return Parts(np.stack([r for r, _, _ in items]), np.array([s for _, s, _ in items], np.int32),
                     np.array([f for _, _, f in items], np.float32))

    def __len__(self) -> int:
        return len(self.rows)


def surface_points(row: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n points on the surface of a bounded primitive (not uniform in area; for tests and meshes)."""
    kind = int(row[0])
    half = row[13:16]
    if kind == BOX:
        local = rng.uniform(-1, 1, (n, 3))
        axis = rng.integers(0, 3, n)
        local[np.arange(n), axis] = np.sign(rng.uniform(-1, 1, n))
        local *= half
    elif kind == CYLINDER:
        a = rng.uniform(-np.pi, np.pi, n)
        local = np.stack([half[0] * np.cos(a), half[0] * np.sin(a), rng.uniform(-half[2], half[2], n)], 1)
    elif kind == ELLIPSOID:
        v = rng.standard_normal((n, 3))
        local = v / np.linalg.norm(v, axis=1, keepdims=True) * half
    else:
        raise ValueError("surface_points needs a bounded primitive")
    return local @ row[4:13].reshape(3, 3).T + row[1:4]


def distance_to_surface(row: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Unsigned distance of points [N, 3] to the surface of one primitive.

    Ellipsoids use |f| / |grad f| (exact to first order near the surface).
    """
    kind = int(row[0])
    rot = row[4:13].reshape(3, 3)
    local = (points - row[1:4]) @ rot
    half = row[13:16]
    if kind == PLANE:
        return np.abs(local[:, 2])
    if kind == BOX:
        q = np.abs(local) - half
        outside = np.linalg.norm(np.maximum(q, 0.0), axis=1)
        inside = np.minimum(q.max(axis=1), 0.0)
        return np.abs(outside + inside)
    if kind == CYLINDER:
        radial = np.linalg.norm(local[:, :2], axis=1) - half[0]
        q = np.stack([radial, np.abs(local[:, 2]) - half[2]], 1)
        outside = np.linalg.norm(np.maximum(q, 0.0), axis=1)
        inside = np.minimum(q.max(axis=1), 0.0)
        return np.abs(outside + inside)
    scaled = np.linalg.norm(local / half, axis=1)
    gradient = np.linalg.norm(local / half**2, axis=1) / np.maximum(scaled, 1e-12)
    return np.abs(scaled - 1.0) / np.maximum(gradient, 1e-12)
