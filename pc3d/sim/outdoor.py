"""Procedural street scenes: road, curbs, sidewalks, sloped terrain, buildings, trees, poles and signs,
parked and moving road users, and a driving ego vehicle.

Layout happens in the road frame (ground plane z = 0, road along +x, right-hand traffic so the
ego's lane is at y < 0); ``road_to_world`` tilts and places that frame in a global world frame
(gentle grade and heading) for poses. Everything is drawn from one numpy Generator, so a seed fixes
the scene.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from . import labels as L
from .actors import Actor, Trajectory, build_parts, sample_size, stop_clock
from .primitives import Parts, box, cylinder, ellipsoid, plane, rot_x, rot_y, rot_z, transform_rows
from .world import World

LANE = 3.5
CURB = 0.15
PIECE = 16.0  # long scenery is cut into pieces this long so that it bins into few grid cells


def _pieces(x0: float, x1: float) -> list[tuple[float, float]]:
    """(centre, length) of consecutive pieces covering [x0, x1]."""
    edges = np.append(np.arange(x0, x1, PIECE), x1)
    return [(float((a + b) / 2), float(b - a)) for a, b in zip(edges[:-1], edges[1:], strict=True) if b - a > 1e-6]


@dataclass
class OutdoorScene:
    """Static scenery, actors and the ego's trajectory over `duration` seconds."""

    static: Parts
    actors: list[Actor]
    ego: Trajectory
    road_half: float
    duration: float
    road_to_world: np.ndarray
    lanes: int = 1
    parking: bool = False

    def world(self, t: float) -> World:
        """The world (road frame) at time t: scenery plus every actor at its pose."""
        rows = [self.static.rows]
        semantic = [self.static.semantic]
        refl = [self.static.reflectivity]
        owner = [np.full(len(self.static), -1, np.int32)]
        for i, actor in enumerate(self.actors):
            x, y, yaw = actor.trajectory.state(t)
            rows.append(transform_rows(actor.parts.rows, rot_z(yaw), np.array([x, y, 0.0])))
            semantic.append(np.full(len(actor.parts), L.moving_id(int(actor.parts.semantic[0]), actor.moving_at(t)),
                                    np.int32))
            refl.append(actor.parts.reflectivity)
            owner.append(np.full(len(actor.parts), i, np.int32))
        return World(np.concatenate(rows), np.concatenate(semantic), np.concatenate(refl), np.concatenate(owner))

    def actor_boxes(self, t: float) -> np.ndarray:
        """float64 [A, 9] road-frame boxes (x, y, z centre, l, w, h, yaw, vx, vy) of the actors at t."""
        out = np.zeros((len(self.actors), 9))
        for i, actor in enumerate(self.actors):
            x, y, yaw = actor.trajectory.state(t)
            out[i, :3] = (x, y, actor.size[2] / 2)
            out[i, 3:6] = actor.size
            out[i, 6] = yaw
            out[i, 7:9] = actor.trajectory.velocity(t)
        return out

    def vehicle_pose(self, t: float) -> np.ndarray:
        """[4, 4] vehicle -> road frame of the ego at t (vehicle origin on the ground)."""
        x, y, yaw = self.ego.state(t)
        m = np.eye(4)
        m[:3, :3] = rot_z(yaw)
        m[:3, 3] = (x, y, 0.0)
        return m


def _dashes(x0: float, x1: float, y: float, rng: np.random.Generator) -> list:
    out = []
    x = x0 + rng.uniform(0, 9)
    while x + 3 < x1:
        out.append((box((x + 1.5, y, 0.0025), (3.0, 0.15, 0.005)), L.LANE_MARKING, 0.95))
        x += 9.0
    return out


def _terrain(side: int, x0: float, x1: float, y0: float, slope: float) -> list:
    """A wide slab rising away from the road at `slope` (rad); its top meets the sidewalk at y0."""
    width = 40.0
    rotation = rot_x(side * slope)
    out = []
    for xc, length in _pieces(x0, x1):
        top_mid = np.array([xc, side * (y0 + width / 2 * np.cos(slope)), CURB + width / 2 * np.sin(slope)])
        out.append((box(top_mid - 0.5 * rotation[:, 2], (length, width, 1.0), rotation), L.TERRAIN, 0.6))
    return out


def _terrain_height(dist_from_edge: float, slope: float) -> float:
    return CURB + max(dist_from_edge, 0.0) * np.tan(slope)


def _side_scenery(side: int, x0: float, x1: float, road_half: float, rng: np.random.Generator) -> list:
    items = []
    walk = rng.uniform(2.0, 4.0)
    edge = road_half + walk
    items += [(box((xc, side * (road_half + walk / 2), (CURB - 0.5) / 2), (length, walk, CURB + 0.5)), L.SIDEWALK,
               0.5) for xc, length in _pieces(x0, x1)]
    slope = np.deg2rad(rng.uniform(0.0, 6.0))
    items += _terrain(side, x0, x1, edge, slope)
    setback = rng.uniform(1.0, 8.0)
    # buildings (with fences in some gaps)
    x = x0 + rng.uniform(-5, 5)
    while x < x1:
        length = rng.uniform(8, 30)
        if rng.random() < 0.8:
            depth, height = rng.uniform(8, 16), rng.uniform(4, 18)
            near = edge + setback + rng.uniform(0, 3)
            base = _terrain_height(near - edge, slope)
            items.append((box((x + length / 2, side * (near + depth / 2), (base + height - 1.0) / 2),
                              (length, depth, base + height + 1.0)), L.BUILDING, float(rng.uniform(0.2, 0.8))))
        elif rng.random() < 0.6:
            fh = rng.uniform(1.0, 2.0)
            yf = edge + 0.3
            items.append((box((x + length / 2, side * yf, CURB + fh / 2 - 0.2), (length, 0.08, fh + 0.4)), L.FENCE,
                          float(rng.uniform(0.3, 0.6))))
        x += length + (rng.uniform(1, 8) if rng.random() < 0.5 else 0.3)
    # trees, bushes, poles and signs
    x = x0 + rng.uniform(0, 10)
    while x < x1:
        on_walk = rng.random() < 0.4
        dist = walk - 0.8 if on_walk else walk + rng.uniform(0.8, max(1.0, setback - 1.0))
        y = side * (road_half + dist)
        ground = CURB if on_walk else _terrain_height(dist - walk, slope)
        trunk_h, trunk_r = rng.uniform(2.0, 3.5), rng.uniform(0.12, 0.3)
        items.append((cylinder((x, y, ground + trunk_h / 2 - 0.3), trunk_r, trunk_h + 0.6), L.TRUNK, 0.4))
        rxy, rz = rng.uniform(1.5, 3.0), rng.uniform(1.3, 2.8)
        items.append((ellipsoid((x, y, ground + trunk_h + 0.6 * rz), (rxy, rxy * rng.uniform(0.8, 1.2), rz)),
                      L.VEGETATION, float(rng.uniform(0.5, 0.7))))
        if rng.random() < 0.5:
            bd = walk + rng.uniform(0.5, max(0.6, setback - 0.5))
            br = rng.uniform(0.5, 1.4)
            items.append((ellipsoid((x + rng.uniform(2, 5), side * (road_half + bd), _terrain_height(bd - walk, slope)),
                                    (br, br * rng.uniform(0.7, 1.3), rng.uniform(0.4, 0.9))), L.VEGETATION, 0.6))
        x += rng.uniform(6, 15)
    x = x0 + rng.uniform(0, 20)
    while x < x1:
        y = side * (road_half + 0.5)
        height, radius = rng.uniform(4, 9), rng.uniform(0.07, 0.15)
        items.append((cylinder((x, y, CURB + height / 2 - 0.2), radius, height + 0.4), L.POLE, 0.45))
        if rng.random() < 0.5:
            size = rng.uniform(0.5, 0.9)
            items.append((box((x, y, CURB + rng.uniform(2.0, 2.8)), (0.05, size, size), rot_z(rng.uniform(-0.3, 0.3))),
                          L.TRAFFIC_SIGN, 1.0))
        elif height > 6:
            arm = rng.uniform(1.0, 2.5)
            items.append((box((x, y - side * arm / 2, CURB + height - 0.3), (0.12, arm, 0.12)), L.POLE, 0.45))
        x += rng.uniform(15, 40)
    return items


# scenery that `zones` keeps on one stretch per side of the road: fences, trees (trunk and crown), poles and signs
ZONED = ((L.FENCE,), (L.TRUNK, L.VEGETATION), (L.POLE, L.TRAFFIC_SIGN))


def _zoned(static: Parts, x0: float, x1: float, rng: np.random.Generator,
           length: tuple[float, float] = (25.0, 50.0)) -> Parts:
    """static with each ZONED group kept only on one stretch (length metres, drawn) of each side of the road."""
    x, side = static.rows[:, 1], np.sign(static.rows[:, 2])
    keep = np.ones(len(static), bool)
    for group in ZONED:
        member = np.isin(static.semantic, group)
        for s in (-1.0, 1.0):
            span = rng.uniform(*length)
            start = rng.uniform(x0, max(x0, x1 - span))
            keep[member & (side == s) & ((x < start) | (x > start + span))] = False
    return Parts(static.rows[keep], static.semantic[keep], static.reflectivity[keep])


def _collide(track: np.ndarray, other: np.ndarray) -> bool:
    """Whether two footprints (_footprint) overlap at some sample time."""
    d = np.linalg.norm(track[:, :, None, :2] - other[:, None, :, :2], axis=-1)
    return bool((d < track[:, :, None, 2] + other[:, None, :, 2]).any())


def _add_actor(kind, trajectory, actors, rng, accepted, times, size=None) -> bool:
    size = sample_size(kind, rng) if size is None else size
    track = _footprint(trajectory, size, times)
    if any(_collide(track, other) for other in accepted):
        return False
    accepted.append(track)
    if actors is not None:
        actors.append(Actor(kind, size, build_parts(kind, size, rng), trajectory, len(actors) + 1))
    return True


def _footprint(trajectory: Trajectory, size: np.ndarray, times: np.ndarray) -> np.ndarray:
    """[T, K, 3] discs (x, y, radius) covering the actor's BEV box at each sample time."""
    length, width = float(size[0]), float(size[1])
    k = max(1, int(np.ceil(length / width)))
    offsets = np.linspace(-(length - width) / 2, (length - width) / 2, k)
    out = np.empty((len(times), k, 3))
    for i, t in enumerate(times):
        x, y, yaw = trajectory.state(float(t))
        out[i, :, 0] = x + offsets * np.cos(yaw)
        out[i, :, 1] = y + offsets * np.sin(yaw)
    out[:, :, 2] = width * 0.6 + 0.25
    return out


def _vehicle_kind(rng: np.random.Generator) -> str:
    return str(rng.choice(["car", "van", "truck"], p=[0.8, 0.14, 0.06]))


def _add_movers(moving_density: float, lanes: int, road_half: float, lane_speed: dict, ego: Trajectory,
                duration: float, actors: list, rng: np.random.Generator, accepted: list, times: np.ndarray) -> None:
    """Moving cars (in the lanes), cyclists (at the outer lane edges) and walking pedestrians (on the
    sidewalks, a quarter crossing) around the stretch of road the ego drives: x from 30 m behind its start
    to 50 m ahead of its end. Targets: Poisson counts of mean 3, 3 and 4 per unit of moving_density; a
    place where the road user would run into another one during the sequence is refused and another
    drawn (at most 10 tries per road user). Cars and cyclists keep their lane's speed (anything faster or
    slower would run into the lane's traffic)."""
    x0, x1 = -30.0, ego.speed * duration + 50.0

    def car():
        lane, side = int(rng.integers(0, lanes)), int(rng.choice([-1, 1]))
        return Trajectory(rng.uniform(x0, x1), side * (lane + 0.5) * LANE, 0.0 if side < 0 else np.pi,
                          lane_speed[lane, side] or 8.0)

    def cyclist():
        side = int(rng.choice([-1, 1]))
        return Trajectory(rng.uniform(x0, x1), side * (lanes * LANE - 0.7), 0.0 if side < 0 else np.pi,
                          lane_speed[lanes - 1, side] or 5.0)

    def pedestrian():
        side = float(rng.choice([-1.0, 1.0]))
        if rng.random() < 0.25:  # crossing the road
            return Trajectory(rng.uniform(x0, x1), side * (road_half + 0.5), -side * np.pi / 2, rng.uniform(1.0, 1.6))
        return Trajectory(rng.uniform(x0, x1), side * (road_half + rng.uniform(0.6, 1.8)),
                          float(rng.choice([0.0, np.pi]) + rng.normal(0, 0.1)), rng.uniform(0.8, 1.7))

    for kind, draw, mean in (("car", car, 3), ("cyclist", cyclist, 3), ("pedestrian", pedestrian, 4)):
        target = int(rng.poisson(mean * moving_density))
        placed = tries = 0
        while placed < target and tries < 10 * target:
            placed += _add_actor(kind, draw(), actors, rng, accepted, times)
            tries += 1


def _add_groups(groups: float, road_half: float, x0: float, x1: float, actors: list, rng: np.random.Generator,
                accepted: list, times: np.ndarray) -> None:
    """Pedestrians in groups of 2-5 on the sidewalks (a Poisson count of mean `groups` per side of the road):
    two abreast, pair behind pair, a hand's breadth to a step apart (0.1-0.4 m between their boxes), all at
    one heading and speed (a fifth of the groups stand). The members' footprints may touch one another's, not
    another road user's: a group that would run into one is left out whole."""
    for side in (-1, 1):
        for _ in range(rng.poisson(groups)):
            n = int(rng.integers(2, 6))
            sizes = [sample_size("pedestrian", rng) for _ in range(n)]
            length, width = max(s[0] for s in sizes), max(s[1] for s in sizes)
            heading = float(rng.choice([0.0, np.pi]) + rng.normal(0, 0.05))
            speed = 0.0 if rng.random() < 0.2 else float(rng.uniform(0.8, 1.5))
            x, y = rng.uniform(x0, x1), side * (road_half + rng.uniform(0.9, 1.3))
            step, beside = length + rng.uniform(0.1, 0.4), width / 2 + rng.uniform(0.05, 0.2)
            members = []
            for i in range(n):
                back = -(i // 2) * step  # along the heading: the first pair leads
                across = 0.0 if (i == n - 1 and n % 2) else (beside if i % 2 else -beside)
                members.append(Trajectory(x + back * np.cos(heading) - across * np.sin(heading),
                                          y + back * np.sin(heading) + across * np.cos(heading), heading, speed))
            tracks = [_footprint(t, s, times) for t, s in zip(members, sizes, strict=True)]
            if any(_collide(track, other) for track in tracks for other in accepted):
                continue
            accepted.extend(tracks)
            for trajectory, size in zip(members, sizes, strict=True):
                actors.append(Actor("pedestrian", size, build_parts("pedestrian", size, rng), trajectory,
                                    len(actors) + 1))


def make_outdoor_scene(rng: np.random.Generator, duration: float = 0.1, density: float = 1.0,
                       moving_density: float = 0.0, stops: int = 0, standing: float = 0.5,
                       zones: bool = False, groups: float = 0.0) -> OutdoorScene:
    """A street scene for `duration` seconds of driving; `density` scales the number of road users.

    moving_density adds moving road users near the ego's path (``_add_movers``: on average 3 cars, 3
    cyclists and 4 walking pedestrians per unit, placed where the sensor sees them); 0 adds none and
    leaves the scene of a seed as it was.
    stops: red lights on the ego's side of the road: the ego and every vehicle and cyclist driving its
    way stand still `stops` times, `standing` x duration seconds in all (stop_clock). They share one
    clock, so each lane keeps its spacing; oncoming traffic and pedestrians go on. 0 leaves the scene of a
    seed as it was (the clock is drawn last).
    zones: fences, trees, and poles with signs stand only on one 25-50 m stretch of each side of the road
    (ZONED), so along a long drive these classes are seen in few places (drawn after everything else: the
    rest of the scene is the scene of the seed).
    groups: pedestrians walking in groups of 2-5, close together (``_add_groups``: a Poisson count of mean
    `groups` per side of the road); drawn last, so 0 leaves the scene of a seed as it was.
    """
    lanes = int(rng.integers(1, 3))
    parking = rng.random() < 0.75
    road_half = lanes * LANE + (2.5 if parking else 0.6)
    ego_speed = 0.0 if rng.random() < 0.1 else rng.uniform(4.0, 12.0)
    ego = Trajectory(0.0, -LANE / 2, 0.0, ego_speed)
    x0, x1 = -90.0, ego_speed * duration + 110.0
    items = [(plane((0, 0, 0), (0, 0, 1)), L.ROAD, 0.45)]
    items += [(box((xc, 0.0, 0.0025), (length, 0.15, 0.005)), L.LANE_MARKING, 0.95) for xc, length in _pieces(x0, x1)]
    if lanes == 2:
        items += _dashes(x0, x1, -LANE, rng) + _dashes(x0, x1, LANE, rng)
    if parking:
        items += [(box((xc, s * lanes * LANE, 0.0025), (length, 0.12, 0.005)), L.LANE_MARKING, 0.9)
                  for s in (-1, 1) for xc, length in _pieces(x0, x1)]
    for side in (-1, 1):
        items += _side_scenery(side, x0, x1, road_half, rng)
    static = Parts.build(items)

    times = np.linspace(0.0, duration, max(2, int(np.ceil(duration / 0.5)) + 1))
    accepted: list[np.ndarray] = []
    actors: list[Actor] = []
    _add_actor("car", ego, None, rng, accepted, times, size=np.array([4.6, 1.8, 1.6]))
    # parked vehicles along the curbs
    if parking:
        for side in (-1, 1):
            x = x0 + rng.uniform(0, 8)
            while x < x1:
                kind = _vehicle_kind(rng)
                size = sample_size(kind, rng)
                if rng.random() < 0.55 * density:
                    yaw = (0.0 if side < 0 else np.pi) + rng.normal(0, 0.04)
                    traj = Trajectory(x + size[0] / 2, side * (road_half - 1.25), yaw, 0.0)
                    _add_actor(kind, traj, actors, rng, accepted, times, size)
                x += size[0] + rng.uniform(0.8, 6.0)
    # traffic in every lane, same speed per lane; some change lanes
    lane_speed: dict[tuple[int, int], float] = {}
    for lane in range(lanes):
        for side in (-1, 1):
            y = side * (lane + 0.5) * LANE
            speed = ego_speed if (side < 0 and lane == 0 and ego_speed > 0) else rng.uniform(5.0, 14.0)
            lane_speed[lane, side] = speed
            heading = 0.0 if side < 0 else np.pi
            x = x0 + rng.uniform(0, 20)
            while x < x1:
                kind = _vehicle_kind(rng)
                size = sample_size(kind, rng)
                if rng.random() < 0.5 * density:
                    segments = ((0.0, 0.0),)
                    if lanes == 2 and rng.random() < 0.3:
                        start = rng.uniform(0.0, max(duration - 4.0, 0.1))
                        rate = 0.1 * (1 if lane == 0 else -1) * (1 if side < 0 else -1)
                        segments = ((0.0, 0.0), (start, rate), (start + 2.0, -rate), (start + 4.0, 0.0))
                    _add_actor(kind, Trajectory(x, y, heading, speed, segments), actors, rng, accepted, times, size)
                x += size[0] + rng.uniform(6.0, 30.0)
    # cyclists near the right edge of each direction
    for side in (-1, 1):
        for _ in range(rng.poisson(1.5 * density)):
            y = side * (lanes * LANE - 0.7)
            traj = Trajectory(rng.uniform(x0, x1), y, 0.0 if side < 0 else np.pi, rng.uniform(3.0, 7.0))
            _add_actor("cyclist", traj, actors, rng, accepted, times)
    # pedestrians on the sidewalks, some standing, some crossing
    for side in (-1, 1):
        for _ in range(rng.poisson(6 * density)):
            y = side * (road_half + rng.uniform(0.6, 1.8))
            speed = 0.0 if rng.random() < 0.3 else rng.uniform(0.8, 1.7)
            yaw = rng.choice([0.0, np.pi]) + rng.normal(0, 0.1)
            _add_actor("pedestrian", Trajectory(rng.uniform(x0, x1), y, yaw, speed), actors, rng, accepted, times)
    if rng.random() < 0.4 * density:
        side = rng.choice([-1.0, 1.0])
        traj = Trajectory(rng.uniform(5, 60), side * (road_half + 0.5), -side * np.pi / 2, rng.uniform(1.0, 1.6))
        _add_actor("pedestrian", traj, actors, rng, accepted, times)

    grade, heading = rng.normal(0, 0.015), rng.uniform(-np.pi, np.pi)
    road_to_world = np.eye(4)
    road_to_world[:3, :3] = rot_z(heading) @ rot_y(-grade)
    road_to_world[:3, 3] = (rng.uniform(-500, 500), rng.uniform(-500, 500), rng.uniform(0, 50))
    if moving_density > 0:  # drawn last, so a scene without them is the scene of the same seed before
        _add_movers(moving_density, lanes, road_half, lane_speed, ego, duration, actors, rng, accepted, times)
    if stops > 0:
        if not 0.0 < standing < 1.0:
            raise ValueError(f"standing must be in (0, 1), got {standing}")
        clock = stop_clock(rng, duration, stops, standing)
        ego = replace(ego, clock=clock)
        for actor in actors:
            traj = actor.trajectory
            if actor.kind != "pedestrian" and traj.speed > 0 and traj.y < 0 and np.cos(traj.yaw) > 0:
                actor.trajectory = replace(traj, clock=clock)
    if zones:
        static = _zoned(static, x0, x1, rng)
    if groups > 0:
        _add_groups(groups, road_half, x0, x1, actors, rng, accepted, times)
    return OutdoorScene(static, actors, ego, road_half, duration, road_to_world, lanes, parking)

