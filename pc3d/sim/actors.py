"""Road users built from several primitives, with KITTI-like sizes, and their motion.

Each actor lives in its box frame: origin at the bottom centre of its 3D box, x forward, z up.
Every part stays at least INSET inside the box so that range noise does not push an actor's
returns out of its ground-truth box.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import labels as L
from .primitives import Parts, box, cylinder, ellipsoid, rot_x, rot_y

INSET = 0.06

# KITTI label statistics (mean, std) of (length, width, height) in metres
SIZE_STATS: dict[str, tuple[tuple[float, float], ...]] = {
    "car": ((3.88, 0.43), (1.63, 0.10), (1.53, 0.14)),
    "van": ((5.08, 0.56), (1.90, 0.12), (2.21, 0.31)),
    "truck": ((10.1, 2.6), (2.58, 0.15), (3.25, 0.44)),
    "pedestrian": ((0.84, 0.23), (0.66, 0.14), (1.76, 0.11)),
    "cyclist": ((1.76, 0.18), (0.60, 0.12), (1.74, 0.09)),
}
_MIN_SIZE = {"pedestrian": (0.5, 0.45, 1.4), "cyclist": (1.45, 0.45, 1.55)}


def sample_size(kind: str, rng: np.random.Generator) -> np.ndarray:
    """(length, width, height) drawn from the KITTI statistics, clipped to two sigmas."""
    stats = SIZE_STATS[kind]
    size = np.array([np.clip(rng.normal(m, s), m - 2 * s, m + 2 * s) for m, s in stats])
    return np.maximum(size, _MIN_SIZE.get(kind, (0.0, 0.0, 0.0)))


_WHEEL_AXIS = rot_x(np.pi / 2)  # cylinder local z -> world y


def _wheels(xs, half_width, radius, semantic, tread=0.22):
    y = half_width - INSET - tread / 2
    return [(cylinder((x, s * y, radius), radius, tread, _WHEEL_AXIS), semantic, 0.03) for x in xs for s in (-1, 1)]


def build_parts(kind: str, size: np.ndarray, rng: np.random.Generator) -> Parts:
    """The primitives of an actor of `kind` and `size` (l, w, h) in its box frame."""
    length, width, height = (float(v) for v in size)
    lo, wo, ho = length / 2 - INSET, width / 2 - INSET, height - INSET
    sem = L.SEMANTIC_ID[kind]
    paint = float(rng.uniform(0.05, 0.8))
    if kind in ("car", "van"):
        r = min(0.36, 0.2 * height + 0.03)
        sill = 0.6 * r
        belt = (0.55 if kind == "car" else 0.45) * height
        roof_start = -lo if kind == "van" else -0.38 * length
        roof_end = (0.22 if kind == "car" else 0.3) * length
        items = [(box((0.0, 0.0, (sill + belt) / 2), (2 * lo, 2 * wo, belt - sill)), sem, paint),
                 (box(((roof_start + roof_end) / 2, 0.0, (belt + ho) / 2),
                      (roof_end - roof_start, 2 * wo - 0.16, ho - belt)), sem, 0.08)]
        # windshield: a slab leaning back from the hood to the roof
        rise, run = ho - belt, min(0.9, lo - roof_end)
        if run > 0.1:
            slope = np.arctan2(rise, run)
            diag = np.hypot(rise, run)
            items.append((box((roof_end + run / 2, 0.0, belt + rise / 2), (diag * 0.98, 2 * wo - 0.2, 0.04),
                              rot_y(slope)), sem, 0.1))
        axle = lo - r - 0.25
        items += _wheels((-axle, axle), width / 2, r, sem)
    elif kind == "truck":
        r = 0.5
        cab = 2.2
        items = [(box((lo - cab / 2, 0.0, (0.5 + 0.8 * height) / 2), (cab, 2 * wo, 0.8 * height - 0.5)), sem, paint),
                 (box(((-lo + lo - cab - 0.15) / 2, 0.0, (0.9 + ho) / 2), (2 * lo - cab - 0.15, 2 * wo, ho - 0.9)),
                  sem, float(rng.uniform(0.3, 0.8))),
                 (box((0.0, 0.0, 0.7), (2 * lo - 0.4, 1.0, 0.35)), sem, 0.05)]
        items += _wheels((lo - 1.2, -lo + 1.4, -lo + 2.5), width / 2, r, sem, tread=0.3)
    elif kind == "pedestrian":
        # front and back differ, as a person's do (feet and a forward lean in front, a bag on the back),
        # so the heading is in the shape: a body symmetric under a half turn leaves front / back a coin flip
        hip = 0.5 * height
        stride = min(0.12, lo - 0.08)
        ry = min(0.2, wo - 0.02)
        chest = min(0.13, lo)
        items = [(cylinder((s * stride, s * 0.09, hip / 2), 0.07, hip - 0.02), sem, 0.25) for s in (-1, 1)]
        items += [(box((min(s * stride + 0.06, lo - 0.12), s * 0.09, 0.04), (0.24, 0.09, 0.08)), sem, 0.1)
                  for s in (-1, 1)]
        items += [(ellipsoid((0.0, 0.0, 0.68 * height), (chest, ry, 0.17 * height), rot_y(0.1)), sem,
                   float(rng.uniform(0.2, 0.6))),
                  (ellipsoid((min(0.07, lo - 0.1), 0.0, ho - 0.11), (0.1, 0.09, 0.11)), sem, 0.3)]
        items += [(cylinder((0.0, s * (ry + 0.0), 0.64 * height), 0.04, 0.3 * height, rot_y(s * 0.15)), sem, 0.3)
                  for s in (-1, 1)]
        bag = min(0.14, lo - chest + 0.04)  # the bag presses 4 cm into the torso's curve
        if bag > 0.06:
            items.append((box((-(chest - 0.04 + bag / 2), 0.0, 0.7 * height), (bag, min(0.3, 2 * ry), 0.25 * height)),
                          sem, 0.35))
    elif kind == "cyclist":
        r = min(0.34, lo / 2 - 0.05)
        hub = lo - r
        items = [(cylinder((s * hub, 0.0, r), r, 0.04, _WHEEL_AXIS), sem, 0.08) for s in (-1, 1)]
        items += [(box((0.0, 0.0, r + 0.2), (2 * hub * 0.8, 0.05, 0.06), rot_y(0.15)), sem, 0.4),
                  (ellipsoid((-0.1, 0.0, 0.7 * height), (0.14, min(0.18, wo), 0.2 * height), rot_y(0.45)), sem,
                   float(rng.uniform(0.2, 0.6))),
                  (ellipsoid((0.12, 0.0, ho - 0.11), (0.1, 0.09, 0.11)), sem, 0.3)]
        items += [(cylinder((0.0, s * 0.12, 0.36 * height), 0.06, 0.36 * height, rot_y(-0.25)), sem, 0.25)
                  for s in (-1, 1)]
    else:
        raise ValueError(f"unknown actor kind {kind!r}")
    return Parts.build(items)


@dataclass
class Trajectory:
    """Planar motion at constant speed with piecewise-constant yaw rate (turns), in the road frame.

    segments: [(start_time, yaw_rate)] sorted by start time (the first starts at 0).
    clock: stops, as knots [(t, tau)] of a piecewise-linear map from scene time t to driving time tau
    (slope 1 while driving, 0 while standing; slope 1 after the last knot); () drives all the time.
    """

    x: float
    y: float
    yaw: float
    speed: float
    segments: tuple[tuple[float, float], ...] = ((0.0, 0.0),)
    clock: tuple[tuple[float, float], ...] = ()

    def driving_time(self, t: float) -> float:
        """tau(t): seconds spent driving by scene time t (t itself without stops)."""
        if not self.clock:
            return t
        (t_last, tau_last) = self.clock[-1]
        if t >= t_last:
            return tau_last + t - t_last
        return float(np.interp(t, [k[0] for k in self.clock], [k[1] for k in self.clock]))

    def standing(self, t: float) -> bool:
        """Whether scene time t falls in a stop (the clock's slope is 0 just after t)."""
        return self.driving_time(t + 1e-3) - self.driving_time(t) < 5e-4

    def state(self, t: float) -> tuple[float, float, float]:
        """(x, y, yaw) at time t >= 0."""
        t = self.driving_time(t)
        x, y, yaw = self.x, self.y, self.yaw
        bounds = [s for s, _ in self.segments[1:]] + [np.inf]
        for (start, rate), end in zip(self.segments, bounds, strict=True):
            if t <= start:
                break
            dt = min(t, end) - start
            if abs(rate) < 1e-9:
                x += self.speed * dt * np.cos(yaw)
                y += self.speed * dt * np.sin(yaw)
            else:
                x += self.speed / rate * (np.sin(yaw + rate * dt) - np.sin(yaw))
                y -= self.speed / rate * (np.cos(yaw + rate * dt) - np.cos(yaw))
            yaw += rate * dt
        return x, y, yaw

    def velocity(self, t: float) -> tuple[float, float]:
        _, _, yaw = self.state(t)
        speed = 0.0 if self.standing(t) else self.speed
        return speed * np.cos(yaw), speed * np.sin(yaw)


def stop_clock(rng: np.random.Generator, duration: float, stops: int, standing: float) -> tuple:
    """Knots [(t, tau)] of `stops` stops that together take `standing` x duration seconds, at random times
    (the driving stretches between them split the rest as a uniform Dirichlet draw)."""
    stand = standing * duration / stops
    drives = rng.dirichlet(np.ones(stops + 1)) * duration * (1.0 - standing)
    knots, t, tau = [(0.0, 0.0)], 0.0, 0.0
    for drive in drives[:-1]:
        t, tau = t + drive, tau + drive
        knots.append((t, tau))
        t += stand
        knots.append((t, tau))
    return tuple((float(a), float(b)) for a, b in knots)


@dataclass
class Actor:
    """A road user: kind, size (l, w, h), parts in its box frame, motion, and a track id."""

    kind: str
    size: np.ndarray
    parts: Parts
    trajectory: Trajectory
    track_id: int

    @property
    def moving(self) -> bool:
        """Whether the actor ever drives or walks (speed above 0.3 m/s)."""
        return self.trajectory.speed > 0.3

    def moving_at(self, t: float) -> bool:
        """Whether it moves at scene time t: a mover waiting at a stop is not moving then."""
        return self.moving and not self.trajectory.standing(t)
