"""Parametric CAD-like shapes for simulated shape classification (the ModelNet40 layout's content).

A shape is a list of primitive surfaces placed in the shape's own frame: z up, the object resting
on z = 0, units of about a metre. ``sample_shape(name, n, rng)`` draws the class's proportions
(part sizes, leg counts, optional parts) and then ``n`` points uniformly by area over the sum of
the parts' surfaces, each with the exact unit outward normal of the surface it lies on. Parts may
overlap (a leg enters the seat): their points are all kept, as ModelNet's unmerged CAD meshes do.
Points come in random order, so the first k points are a uniform subsample (PointNet++ reads the
first k). Every random choice is drawn from the generator passed in.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .primitives import rot_x, rot_y, rot_z

FLIP = rot_x(np.pi)  # local z -> -z: a disk facing down


@dataclass(frozen=True, kw_only=True, eq=False)
class Surface:
    """A primitive surface: local geometry mapped to the shape frame by x -> rotation @ x + centre.

    flip: normals point into the primitive's solid (the inner wall of a cup, the inside of a shade).
    """

    centre: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation: np.ndarray | None = None
    flip: bool = False

    def area(self) -> float:
        raise NotImplementedError

    def local(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """float64 [n, 3] points uniform by area on the surface in its local frame, and their unit normals."""
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True, eq=False)
class Box(Surface):
    """The six faces of a box of full size (dx, dy, dz) centred on the local origin."""

    size: tuple[float, float, float]

    def face_areas(self) -> np.ndarray:
        dx, dy, dz = self.size
        return np.repeat([dy * dz, dx * dz, dx * dy], 2)  # faces -x, +x, -y, +y, -z, +z

    def area(self) -> float:
        return float(self.face_areas().sum())

    def local(self, n, rng):
        areas = self.face_areas()
        face = rng.choice(6, n, p=areas / areas.sum())
        axis, sign, rows = face // 2, np.where(face % 2, 1.0, -1.0), np.arange(n)
        half = np.asarray(self.size, np.float64) / 2
        points = rng.uniform(-1.0, 1.0, (n, 3)) * half
        points[rows, axis] = sign * half[axis]
        normals = np.zeros((n, 3))
        normals[rows, axis] = sign
        return points, normals


@dataclass(frozen=True, kw_only=True, eq=False)
class Frustum(Surface):
    """The side of a truncated cone along local z from z = -length / 2 (radius r0) to +length / 2 (radius
    r1): a cylinder when r0 == r1, a cone when one radius is 0. No caps (add Disks)."""

    r0: float
    r1: float
    length: float
    arc: tuple[float, float] = (0.0, 2 * np.pi)

    def area(self) -> float:
        slant = np.hypot(self.length, self.r0 - self.r1)
        return float((self.arc[1] - self.arc[0]) / 2 * (self.r0 + self.r1) * slant)

    def local(self, n, rng):
        u = rng.random(n)
        if np.isclose(self.r0, self.r1):
            t = u
        else:  # the density of the height t in [0, 1] grows with the radius r0 + (r1 - r0) t
            t = (np.sqrt(self.r0**2 + u * (self.r1**2 - self.r0**2)) - self.r0) / (self.r1 - self.r0)
        radius = self.r0 + (self.r1 - self.r0) * t
        a = rng.uniform(*self.arc, n)
        c, s = np.cos(a), np.sin(a)
        points = np.stack([radius * c, radius * s, (t - 0.5) * self.length], 1)
        normals = np.stack([c, s, np.full(n, (self.r0 - self.r1) / self.length)], 1)
        return points, normals / np.linalg.norm(normals, axis=1, keepdims=True)


@dataclass(frozen=True, kw_only=True, eq=False)
class Disk(Surface):
    """A flat disk (an annulus with `inner` > 0) in the local xy plane, normal +z."""

    radius: float
    inner: float = 0.0

    def area(self) -> float:
        return float(np.pi * (self.radius**2 - self.inner**2))

    def local(self, n, rng):
        r = np.sqrt(self.inner**2 + rng.random(n) * (self.radius**2 - self.inner**2))
        a = rng.uniform(0.0, 2 * np.pi, n)
        points = np.stack([r * np.cos(a), r * np.sin(a), np.zeros(n)], 1)
        return points, np.tile([0.0, 0.0, 1.0], (n, 1))


@dataclass(frozen=True, kw_only=True, eq=False)
class Sphere(Surface):
    radius: float

    def area(self) -> float:
        return float(4 * np.pi * self.radius**2)

    def local(self, n, rng):
        v = rng.standard_normal((n, 3))
        normals = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        return self.radius * normals, normals


@dataclass(frozen=True, kw_only=True, eq=False)
class Torus(Surface):
    """A tube of radius `minor` around the circle of radius `major` in the local xy plane, over the
    angles `arc` of that circle (a handle is half a torus)."""

    major: float
    minor: float
    arc: tuple[float, float] = (0.0, 2 * np.pi)

    def area(self) -> float:
        return float((self.arc[1] - self.arc[0]) * 2 * np.pi * self.major * self.minor)

    def local(self, n, rng):
        v = np.empty(0)
        while len(v) < n:  # the tube angle's density is proportional to major + minor cos v: rejection
            draw = rng.uniform(0.0, 2 * np.pi, 2 * n)
            keep = rng.random(2 * n) * (self.major + self.minor) < self.major + self.minor * np.cos(draw)
            v = np.concatenate([v, draw[keep]])
        v = v[:n]
        u = rng.uniform(*self.arc, n)
        normals = np.stack([np.cos(v) * np.cos(u), np.cos(v) * np.sin(u), np.sin(v)], 1)
        ring = np.stack([self.major * np.cos(u), self.major * np.sin(u), np.zeros(n)], 1)
        return ring + self.minor * normals, normals


def sample_surfaces(parts: list[Surface], n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """float64 [n, 3] points uniform by area over the parts, in random order, and their unit normals [n, 3]."""
    areas = np.array([part.area() for part in parts])
    counts = rng.multinomial(n, areas / areas.sum())
    points, normals = [], []
    for part, count in zip(parts, counts, strict=True):
        p, q = part.local(int(count), rng)
        rotation = np.eye(3) if part.rotation is None else np.asarray(part.rotation, np.float64)
        points.append(p @ rotation.T + np.asarray(part.centre, np.float64))
        normals.append((-q if part.flip else q) @ rotation.T)
    order = rng.permutation(n)
    return np.concatenate(points)[order], np.concatenate(normals)[order]


# ---- part helpers (z up) ----------------------------------------------------------------------------

def cylinder(centre, radius: float, length: float, rotation=None, caps: bool = True) -> list[Surface]:
    """A cylinder along the local z of `rotation` (default vertical), with both caps by default."""
    r = np.eye(3) if rotation is None else np.asarray(rotation, np.float64)
    centre = np.asarray(centre, np.float64)
    parts: list[Surface] = [Frustum(centre=tuple(centre), rotation=r, r0=radius, r1=radius, length=length)]
    if caps:
        parts += [Disk(centre=tuple(centre + r[:, 2] * length / 2), rotation=r, radius=radius),
                  Disk(centre=tuple(centre - r[:, 2] * length / 2), rotation=r @ FLIP, radius=radius)]
    return parts


def legs(xy: np.ndarray, height: float, thickness: float, round_legs: bool) -> list[Surface]:
    """Vertical legs from z = 0 to `height` at the points xy [k, 2]: cylinders or square boxes."""
    if round_legs:
        return [p for x, y in xy for p in cylinder((x, y, height / 2), thickness / 2, height)]
    return [Box(centre=(x, y, height / 2), size=(thickness, thickness, height)) for x, y in xy]


def corners(dx: float, dy: float) -> np.ndarray:
    """float64 [4, 2]: the corners of a dx x dy rectangle centred on the origin."""
    return np.array([[sx * dx / 2, sy * dy / 2] for sx in (-1, 1) for sy in (-1, 1)])


# ---- the classes (names as ModelNet40's) --------------------------------------------------------------

def airplane(rng: np.random.Generator) -> list[Surface]:
    length, radius = rng.uniform(3.0, 4.5), rng.uniform(0.15, 0.3)
    along_x = rot_y(np.pi / 2)
    nose, tail = rng.uniform(0.3, 0.8), rng.uniform(0.6, 1.2)
    parts = cylinder((0, 0, 0), radius, length, along_x, caps=False)
    parts += [Frustum(centre=(length / 2 + nose / 2, 0, 0), rotation=along_x, r0=radius, r1=0.02, length=nose),
              Frustum(centre=(-length / 2 - tail / 2, 0, 0), rotation=along_x, r0=0.05, r1=radius, length=tail)]
    span, chord, sweep = rng.uniform(2.5, 4.5), rng.uniform(0.4, 0.9), rng.uniform(0.0, 0.6)
    x_wing = rng.uniform(-0.2, 0.4) * length / 2
    for side in (-1, 1):
        parts.append(Box(centre=(x_wing - np.tan(sweep) * span / 4, side * span / 4, 0), rotation=rot_z(side * sweep),
                         size=(chord, span / 2, 0.06)))
        if rng.random() < 0.7:  # an engine under each wing
            parts += cylinder((x_wing, side * span / 5, -radius), 0.12, 0.6, along_x)
    x_tail = -length / 2 - tail * 0.6
    parts += [Box(centre=(x_tail, 0, 0), size=(chord * 0.6, span * 0.35, 0.05)),
              Box(centre=(x_tail, 0, radius + 0.3), size=(chord * 0.7, 0.05, 0.6))]
    return parts


def bed(rng):
    length, width, height = rng.uniform(1.9, 2.2), rng.uniform(0.9, 1.9), rng.uniform(0.25, 0.45)
    mattress = rng.uniform(0.15, 0.3)
    parts = [Box(centre=(0, 0, height / 2), size=(length, width, height)),
             Box(centre=(0, 0, height + mattress / 2), size=(length * 0.97, width * 0.97, mattress)),
             Box(centre=(-length / 2, 0, rng.uniform(0.45, 0.65)), size=(0.06, width, rng.uniform(0.9, 1.3)))]
    if rng.random() < 0.5:
        parts.append(Box(centre=(length / 2, 0, 0.3), size=(0.06, width, 0.6)))
    parts += [Box(centre=(-length / 2 + 0.4, y * width / 4, height + mattress + 0.05), size=(0.35, width * 0.4, 0.1))
              for y in ((-1, 1) if width > 1.3 else (0,))]  # pillows
    return parts


def bench(rng):
    length, depth, height = rng.uniform(1.2, 2.2), rng.uniform(0.3, 0.5), rng.uniform(0.4, 0.5)
    parts: list[Surface] = [Box(centre=(0, 0, height), size=(length, depth, 0.05))]
    if rng.random() < 0.5:  # two slab legs
        parts += [Box(centre=(x, 0, height / 2), size=(0.05, depth, height)) for x in (-length * 0.4, length * 0.4)]
    else:
        parts += legs(corners(length * 0.9, depth * 0.8), height, 0.05, bool(rng.random() < 0.5))
    if rng.random() < 0.5:
        back = rng.uniform(0.25, 0.4)
        parts.append(Box(centre=(0, -depth / 2, height + back / 2), size=(length, 0.04, back)))
    return parts


def bookshelf(rng):
    width, depth, height = rng.uniform(0.6, 1.6), rng.uniform(0.25, 0.4), rng.uniform(0.8, 2.0)
    t = 0.03
    parts = [Box(centre=(x, 0, height / 2), size=(t, depth, height)) for x in (-width / 2, width / 2)]
    parts.append(Box(centre=(0, -depth / 2, height / 2), size=(width, t, height)))
    shelves = int(rng.integers(3, 7))
    parts += [Box(centre=(0, 0, z), size=(width, depth, t)) for z in np.linspace(0, height, shelves)]
    return parts


def bottle(rng):
    radius, body = rng.uniform(0.03, 0.06), rng.uniform(0.15, 0.3)
    neck_r, shoulder, neck = radius * rng.uniform(0.25, 0.45), rng.uniform(0.02, 0.08), rng.uniform(0.04, 0.1)
    parts = cylinder((0, 0, body / 2), radius, body, caps=False)
    parts += [Disk(centre=(0, 0, 0), rotation=FLIP, radius=radius),
              Frustum(centre=(0, 0, body + shoulder / 2), r0=radius, r1=neck_r, length=shoulder)]
    parts += cylinder((0, 0, body + shoulder + neck / 2), neck_r, neck)
    return parts


def car(rng):
    length, width, body = rng.uniform(3.5, 5.0), rng.uniform(1.6, 2.0), rng.uniform(0.5, 0.8)
    wheel_r, clearance = rng.uniform(0.28, 0.4), rng.uniform(0.15, 0.3)
    cabin_len, cabin_h = length * rng.uniform(0.4, 0.65), rng.uniform(0.4, 0.6)
    parts: list[Surface] = [
        Box(centre=(0, 0, clearance + body / 2), size=(length, width, body)),
        Box(centre=(rng.uniform(-0.15, 0.05) * length, 0, clearance + body + cabin_h / 2),
            size=(cabin_len, width * 0.9, cabin_h))]
    axle = length / 2 - wheel_r * rng.uniform(1.2, 1.8)
    for x, y in corners(2 * axle, width):
        parts += cylinder((x, y, wheel_r), wheel_r, 0.22, rot_x(np.pi / 2))
    return parts


def chair(rng):
    width, depth, height = rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.5)
    back = rng.uniform(0.35, 0.7)
    parts: list[Surface] = [Box(centre=(0, 0, height), size=(depth, width, 0.05)),
                            Box(centre=(-depth / 2, 0, height + back / 2), size=(0.04, width, back))]
    parts += legs(corners(depth * 0.85, width * 0.85), height, rng.uniform(0.03, 0.06), bool(rng.random() < 0.5))
    if rng.random() < 0.3:  # armrests
        parts += [Box(centre=(0, y * width / 2, height + 0.22), size=(depth, 0.05, 0.04)) for y in (-1, 1)]
    return parts


def cone(rng):
    base, height = rng.uniform(0.3, 0.45), rng.uniform(0.5, 0.9)
    radius = base * rng.uniform(0.3, 0.4)
    return [Box(centre=(0, 0, 0.015), size=(base, base, 0.03)),
            Frustum(centre=(0, 0, 0.03 + height / 2), r0=radius, r1=radius * 0.15, length=height),
            Disk(centre=(0, 0, 0.03 + height), radius=radius * 0.15)]


def cup(rng):
    r0, height = rng.uniform(0.03, 0.05), rng.uniform(0.07, 0.12)
    r1, wall = r0 * rng.uniform(1.0, 1.3), 0.004
    parts: list[Surface] = [
        Frustum(centre=(0, 0, height / 2), r0=r0, r1=r1, length=height),
        Frustum(centre=(0, 0, height / 2 + wall / 2), r0=r0 - wall, r1=r1 - wall, length=height - wall, flip=True),
        Disk(centre=(0, 0, 0), rotation=FLIP, radius=r0), Disk(centre=(0, 0, wall), radius=r0 - wall),
        Disk(centre=(0, 0, height), radius=r1, inner=r1 - wall)]
    if rng.random() < 0.8:  # a handle: half a torus in the xz plane on the +x side
        major = height * rng.uniform(0.25, 0.4)
        parts.append(Torus(centre=((r0 + r1) / 2, 0, height / 2), rotation=rot_x(np.pi / 2), major=major,
                           minor=0.006, arc=(-np.pi / 2, np.pi / 2)))
    return parts


def guitar(rng):
    lower, upper = rng.uniform(0.17, 0.22), rng.uniform(0.12, 0.16)
    depth, neck = rng.uniform(0.06, 0.11), rng.uniform(0.45, 0.6)
    facing = rot_x(np.pi / 2)  # body disks face the y axis
    parts = cylinder((0, 0, lower), lower, depth, facing) + cylinder((0, 0, 2 * lower + upper * 0.6), upper, depth,
                                                                       facing)
    top = 2 * lower + 1.6 * upper
    parts += [Box(centre=(0, 0, top + neck / 2 - 0.05), size=(0.05, 0.03, neck)),
              Box(centre=(0, 0, top + neck + 0.05), size=(0.08, 0.02, 0.18))]
    return parts


def lamp(rng):
    base_r, pole = rng.uniform(0.08, 0.15), rng.uniform(0.3, 1.5)
    shade_low, shade_high = rng.uniform(0.12, 0.25), rng.uniform(0.06, 0.12)
    shade_h = rng.uniform(0.15, 0.3)
    parts = cylinder((0, 0, 0.015), base_r, 0.03) + cylinder((0, 0, 0.03 + pole / 2), 0.012, pole)
    centre = (0, 0, 0.03 + pole - shade_h * 0.3)
    parts += [Frustum(centre=centre, r0=shade_low, r1=shade_high, length=shade_h),
              Frustum(centre=centre, r0=shade_low - 0.003, r1=shade_high - 0.003, length=shade_h, flip=True)]
    return parts


def laptop(rng):
    width, depth = rng.uniform(0.3, 0.4), rng.uniform(0.2, 0.28)
    opening = rng.uniform(np.radians(95), np.radians(130))
    hinge = np.array([-depth / 2, 0.0, 0.02])
    lid = rot_y(-opening)  # the lid turned about the hinge (y axis) from lying forward on the base
    centre = hinge + lid @ np.array([depth / 2, 0.0, 0.006])
    return [Box(centre=(0, 0, 0.01), size=(depth, width, 0.02)),
            Box(centre=tuple(centre), rotation=lid, size=(depth, width, 0.012))]


def monitor(rng):
    width, height, depth = rng.uniform(0.45, 0.75), rng.uniform(0.28, 0.45), rng.uniform(0.02, 0.06)
    neck = rng.uniform(0.08, 0.18)
    parts: list[Surface] = [Box(centre=(0, 0, neck + height / 2), size=(depth, width, height)),
                            Box(centre=(-depth, 0, neck / 2 + 0.01), size=(0.03, 0.06, neck + 0.02))]
    if rng.random() < 0.5:
        parts += cylinder((-depth, 0, 0.005), rng.uniform(0.08, 0.12), 0.01)
    else:
        parts.append(Box(centre=(-depth, 0, 0.005), size=(0.18, rng.uniform(0.2, 0.3), 0.01)))
    return parts


def sofa(rng):
    length, depth, seat = rng.uniform(1.4, 2.4), rng.uniform(0.8, 1.0), rng.uniform(0.35, 0.45)
    back, arm = rng.uniform(0.35, 0.5), rng.uniform(0.15, 0.25)
    parts = [Box(centre=(0, 0, seat / 2), size=(depth, length, seat)),
             Box(centre=(-depth / 2 + 0.1, 0, seat + back / 2), size=(0.2, length, back))]
    parts += [Box(centre=(0, y * (length / 2 - arm / 2), seat + 0.1), size=(depth, arm, 0.2)) for y in (-1, 1)]
    cushions = int(rng.integers(2, 4))
    inner = length - 2 * arm
    parts += [Box(centre=(0.05, y, seat + 0.05), size=(depth - 0.25, inner / cushions * 0.95, 0.1))
              for y in (np.arange(cushions) + 0.5) * inner / cushions - inner / 2]
    return parts


def stool(rng):
    height, radius = rng.uniform(0.45, 0.8), rng.uniform(0.15, 0.22)
    count, splay = int(rng.integers(3, 5)), rng.uniform(0.0, 0.15)
    parts = cylinder((0, 0, height - 0.02), radius, 0.04)
    length = height / np.cos(splay)
    for a in np.arange(count) * 2 * np.pi / count + rng.uniform(0, np.pi):
        foot = radius * 0.8 + np.tan(splay) * height / 2
        tilt = rot_z(a) @ rot_y(-splay)  # leaning in toward the seat
        parts += cylinder((foot * np.cos(a), foot * np.sin(a), height / 2), 0.015, length, tilt)
    return parts


def table(rng):
    height = rng.uniform(0.45, 0.8)
    if rng.random() < 0.35:  # round, on a pedestal
        radius = rng.uniform(0.35, 0.6)
        return (cylinder((0, 0, height - 0.02), radius, 0.04) + cylinder((0, 0, height / 2), 0.04, height)
                + cylinder((0, 0, 0.01), radius * 0.5, 0.02))
    length, width = rng.uniform(0.8, 2.0), rng.uniform(0.6, 1.0)
    return [Box(centre=(0, 0, height - 0.02), size=(length, width, 0.04))] + legs(
        corners(length * 0.9, width * 0.9), height - 0.04, rng.uniform(0.04, 0.08), bool(rng.random() < 0.4))


SHAPES: dict[str, Callable[[np.random.Generator], list[Surface]]] = {
    f.__name__: f for f in (airplane, bed, bench, bookshelf, bottle, car, chair, cone, cup, guitar, lamp, laptop,
                            monitor, sofa, stool, table)}
SHAPE_NAMES = tuple(SHAPES)  # class id = position, alphabetical as modelnet40_shape_names.txt


def sample_shape(name: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """float64 [n, 3] points (z up) of a random instance of class `name` and their unit outward normals [n, 3]."""
    return sample_surfaces(SHAPES[name](rng), n, rng)
