"""ScanNet-like rooms as coloured triangle meshes with NYU40 labels, instances and over-segments.

A room (axis-aligned frame: floor at z = 0, walls along x and y from the origin) has a floor,
four walls with doors and windows, and furniture of the ScanNet-20 classes chosen by room type,
each piece built from boxes. Surfaces are triangulated grids of about `spacing` metres; every
vertex carries a colour, an NYU40 id, an instance id (0 = none) and a segment id (patches of about
half a metre, ScanNet's over-segmentation).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .labels import NYU40_ID

ROOM_TYPES = {
    "bedroom": ["bed", "desk", "chair", "cabinet", "dresser", "curtain", "picture"],
    "living room": ["sofa", "table", "chair", "chair", "bookshelf", "otherfurniture", "picture", "curtain"],
    "office": ["desk", "desk", "chair", "chair", "bookshelf", "cabinet", "whiteboard"],
    "bathroom": ["toilet", "sink", "bathtub", "shower curtain", "cabinet", "mirror"],
    "kitchen": ["counter", "refridgerator", "sink", "cabinet", "table", "chair", "chair"],
}
# footprint (length, width) and height ranges in metres of each furniture class
SIZES = {
    "bed": ((1.9, 2.2), (1.0, 1.8), (0.5, 0.7)), "desk": ((1.0, 1.6), (0.6, 0.8), (0.72, 0.78)),
    "chair": ((0.45, 0.55), (0.45, 0.55), (0.8, 1.0)), "cabinet": ((0.5, 1.2), (0.4, 0.6), (0.6, 1.2)),
    "dresser": ((0.8, 1.4), (0.45, 0.6), (0.8, 1.1)), "sofa": ((1.6, 2.4), (0.8, 1.0), (0.75, 0.95)),
    "table": ((0.9, 1.8), (0.7, 1.0), (0.7, 0.78)), "bookshelf": ((0.7, 1.2), (0.3, 0.4), (1.6, 2.1)),
    "otherfurniture": ((0.4, 1.0), (0.4, 0.8), (0.4, 1.0)), "toilet": ((0.6, 0.75), (0.38, 0.45), (0.7, 0.8)),
    "sink": ((0.5, 0.8), (0.4, 0.55), (0.8, 0.9)), "bathtub": ((1.5, 1.8), (0.7, 0.8), (0.5, 0.6)),
    "counter": ((1.8, 3.0), (0.6, 0.65), (0.88, 0.92)), "refridgerator": ((0.6, 0.8), (0.6, 0.75), (1.7, 1.9)),
}
WALL_ITEMS = {"curtain": ((1.0, 2.0), (2.0, 2.4)), "picture": ((0.4, 1.0), (0.3, 0.8)),
              "whiteboard": ((1.2, 2.4), (0.9, 1.2)), "mirror": ((0.5, 0.9), (0.6, 1.0)),
              "shower curtain": ((0.8, 1.4), (1.8, 2.0))}
# how far doors, windows and wall items stand off their wall (frames, sills, folds): the thickness of their boxes
WALL_DEPTH = {"door": 0.05, "window": 0.12, "curtain": 0.12, "shower curtain": 0.08, "picture": 0.03,
              "whiteboard": 0.02, "mirror": 0.02}


@dataclass
class Mesh:
    """Triangle mesh: vertices float32 [V, 3], colors uint8 [V, 3], faces int32 [F, 3], and per vertex
    label (NYU40 id, uint16), instance (int32, 0 none) and segment (int32)."""

    vertices: list = field(default_factory=list)
    colors: list = field(default_factory=list)
    faces: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    instances: list = field(default_factory=list)
    segments: list = field(default_factory=list)
    instance_names: dict = field(default_factory=dict)
    count: int = 0
    next_segment: int = 0

    def add_rect(self, origin, u, v, spacing, color, label, instance, rng, patch=0.5) -> None:
        """A rectangle origin + a u + b v (a, b in [0, 1]) as a triangulated grid."""
        origin, u, v = (np.asarray(a, np.float64) for a in (origin, u, v))
        nu = max(2, int(np.ceil(np.linalg.norm(u) / spacing)) + 1)
        nv = max(2, int(np.ceil(np.linalg.norm(v) / spacing)) + 1)
        a, b = np.meshgrid(np.linspace(0, 1, nu), np.linspace(0, 1, nv), indexing="ij")
        pts = origin + a.reshape(-1, 1) * u + b.reshape(-1, 1) * v
        i, j = np.meshgrid(np.arange(nu - 1), np.arange(nv - 1), indexing="ij")
        q = (i * nv + j).ravel()
        faces = np.concatenate([np.stack([q, q + nv, q + nv + 1], 1), np.stack([q, q + nv + 1, q + 1], 1)])
        pu = np.floor(a.ravel() * np.linalg.norm(u) / patch).astype(np.int64)
        pv = np.floor(b.ravel() * np.linalg.norm(v) / patch).astype(np.int64)
        seg = pu * (int(pv.max()) + 1) + pv
        shade = np.clip(np.asarray(color, np.float64) + rng.normal(0, 6, (len(pts), 3)), 0, 255)
        self.vertices.append(pts.astype(np.float32))
        self.colors.append(shade.astype(np.uint8))
        self.faces.append((faces + self.count).astype(np.int32))
        self.labels.append(np.full(len(pts), label, np.uint16))
        self.instances.append(np.full(len(pts), instance, np.int32))
        self.segments.append((seg + self.next_segment).astype(np.int32))
        self.count += len(pts)
        self.next_segment += int(seg.max()) + 1

    def add_box(self, centre, size, yaw, spacing, color, label, instance, rng, bottom=False) -> None:
        """The faces of an upright box (the bottom face only if asked)."""
        c, s = np.cos(yaw), np.sin(yaw)
        ex = np.array([c, s, 0.0]) * size[0]
        ey = np.array([-s, c, 0.0]) * size[1]
        ez = np.array([0.0, 0.0, size[2]])
        o = np.asarray(centre, np.float64) - (ex + ey + ez) / 2
        faces = [(o + ez, ex, ey), (o, ex, ez), (o + ey, ez, ex), (o, ez, ey), (o + ex, ey, ez)]
        if bottom:
            faces.append((o, ey, ex))
        for origin, u, v in faces:
            self.add_rect(origin, u, v, spacing, color, label, instance, rng)

    def arrays(self) -> tuple[np.ndarray, ...]:
        return (np.concatenate(self.vertices), np.concatenate(self.colors), np.concatenate(self.faces),
                np.concatenate(self.labels), np.concatenate(self.instances), np.concatenate(self.segments))


def _furniture(mesh: Mesh, name: str, centre_xy, size, yaw, spacing, rng, instance) -> None:
    label = NYU40_ID[name]
    color = rng.uniform(40, 220, 3)
    length, width, height = size
    c, s = np.cos(yaw), np.sin(yaw)

    def part(dx, dy, z0, sx, sy, sz, col=color):
        x = centre_xy[0] + c * dx - s * dy
        y = centre_xy[1] + s * dx + c * dy
        mesh.add_box((x, y, z0 + sz / 2), (sx, sy, sz), yaw, spacing, col, label, instance, rng)

    if name in ("chair", "table", "desk"):
        top = 0.45 if name == "chair" else height - 0.04
        part(0, 0, top, length, width, 0.04)
        leg = 0.04
        for sx in (-1, 1):
            for sy in (-1, 1):
                part(sx * (length / 2 - leg), sy * (width / 2 - leg), 0.0, leg, leg, top)
        if name == "chair":
            part(-length / 2 + 0.03, 0, top + 0.04, 0.05, width, height - top - 0.04)
    elif name == "sofa":
        part(0, 0, 0.0, length, width, 0.42)
        part(0, -width / 2 + 0.1, 0.0, length, 0.2, height)
        for sx in (-1, 1):
            part(sx * (length / 2 - 0.1), 0, 0.0, 0.2, width, 0.6)
    elif name == "bed":
        part(0, 0, 0.0, length, width, height)
        part(-length / 2 + 0.04, 0, 0.0, 0.08, width, height + 0.5)
        mesh_label = NYU40_ID["pillow"]
        x = centre_xy[0] + c * (-length / 2 + 0.35)
        y = centre_xy[1] + s * (-length / 2 + 0.35)
        mesh.add_box((x, y, height + 0.07), (0.4, 0.6, 0.14), yaw, spacing, (230, 230, 230), mesh_label, instance + 1,
                     rng)
    elif name == "toilet":
        part(0.1, 0, 0.0, length - 0.2, width, 0.42)
        part(-length / 2 + 0.1, 0, 0.3, 0.2, width, height - 0.3)
    else:
        part(0, 0, 0.0, length, width, height)


def make_room(rng: np.random.Generator, spacing: float = 0.05) -> tuple[Mesh, str]:
    """A random room mesh (axis-aligned frame) and its room type."""
    room_type = str(rng.choice(list(ROOM_TYPES)))
    size_x, size_y, height = rng.uniform(3.5, 8.0), rng.uniform(3.0, 7.0), rng.uniform(2.4, 3.0)
    mesh = Mesh()
    instance = 1
    mesh.instance_names[instance] = "floor"
    mesh.add_rect((0, 0, 0), (size_x, 0, 0), (0, size_y, 0), spacing, rng.uniform(90, 180, 3), NYU40_ID["floor"],
                  instance, rng)
    corners = [(0, 0), (size_x, 0), (size_x, size_y), (0, size_y)]
    wall_color = rng.uniform(170, 240, 3)
    walls = []
    for k in range(4):
        a, b = np.array(corners[k], float), np.array(corners[(k + 1) % 4], float)
        instance += 1
        mesh.instance_names[instance] = "wall"
        mesh.add_rect((*a, 0), (*(b - a), 0), (0, 0, height), spacing, wall_color, NYU40_ID["wall"], instance, rng)
        walls.append((a, b))
    inward = [np.array([0, 1.0]), np.array([-1.0, 0]), np.array([0, -1.0]), np.array([1.0, 0])]

    def on_wall(name, width, z0, h):
        nonlocal instance
        k = int(rng.integers(0, 4))
        a, b = walls[k]
        length = np.linalg.norm(b - a)
        if length < width + 0.4:
            return
        t = rng.uniform(0.2, length - width - 0.2)
        d = (b - a) / length
        base = a + d * t + inward[k] * 0.005  # a slab standing off the wall: its front and four edges
        depth = inward[k] * (WALL_DEPTH[name] - 0.005)
        instance += 1
        mesh.instance_names[instance] = name
        color, label = rng.uniform(30, 230, 3), NYU40_ID[name]
        across, up = (*(d * width), 0), (0, 0, h)
        mesh.add_rect((*(base + depth), z0), across, up, spacing, color, label, instance, rng)
        for corner, side in (((*base, z0), up), ((*(base + d * width), z0), up),
                             ((*base, z0), across), ((*base, z0 + h), across)):
            mesh.add_rect(corner, (*depth, 0), side, spacing, color, label, instance, rng)

    on_wall("door", rng.uniform(0.8, 1.0), 0.0, rng.uniform(2.0, 2.1))
    for _ in range(int(rng.integers(1, 3))):
        on_wall("window", rng.uniform(0.8, 1.6), rng.uniform(0.8, 1.0), rng.uniform(1.0, 1.3))
    placed: list[tuple[float, float, float, float]] = []
    for name in ROOM_TYPES[room_type]:
        if name in WALL_ITEMS:
            (w0, w1), (h0, h1) = WALL_ITEMS[name]
            z0 = 0.05 if name in ("curtain", "shower curtain") else rng.uniform(0.9, 1.3)
            on_wall(name, rng.uniform(w0, w1), z0, rng.uniform(h0, h1))
            continue
        (l0, l1), (b0, b1), (h0, h1) = SIZES[name]
        size = np.array([rng.uniform(l0, l1), rng.uniform(b0, b1), rng.uniform(h0, h1)])
        for _ in range(20):
            yaw = float(rng.choice([0.0, np.pi / 2, np.pi, -np.pi / 2]))
            half = np.abs([[np.cos(yaw), np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]) @ size[:2] / 2
            cx = rng.uniform(half[0] + 0.05, size_x - half[0] - 0.05) if size_x > 2 * half[0] + 0.1 else -1
            cy = rng.uniform(half[1] + 0.05, size_y - half[1] - 0.05) if size_y > 2 * half[1] + 0.1 else -1
            if cx < 0 or cy < 0:
                break
            if all(abs(cx - px) > half[0] + qx + 0.1 or abs(cy - py) > half[1] + qy + 0.1 for px, py, qx, qy in placed):
                placed.append((cx, cy, half[0], half[1]))
                instance += 1
                mesh.instance_names[instance] = name
                _furniture(mesh, name, (cx, cy), size, yaw, spacing, rng, instance)
                if name == "bed":
                    instance += 1
                    mesh.instance_names[instance] = "pillow"
                break
    return mesh, room_type
