"""Drive a scene through time with a LiDAR: frames with points, labels, boxes, flow and poses.

Frames (all in the sensor frame of that frame unless named otherwise):

- points float32 [N, 4] x, y, z, reflectance
- semantic int32 [N] SemanticKITTI raw id (moving objects 252..259); instance int32 [N] (track id, 0 stuff)
- boxes float32 [M, 9] x, y, z centre, dx, dy, dz, heading, vx, vy (ground velocity in this frame's axes)
- kinds [M] object kind ("car", ...), track_ids int32 [M], num_points int32 [M] (points inside each box)
- flow float32 [N, 3] (optional): where each point is at t + dt, in the sensor frame at t + dt, minus
  where it is now (ego motion included), the HPLFlowNet convention pc2 = pc1 + flow
- sensor_pose / vehicle_pose float64 [4, 4]: sensor -> world and vehicle -> world (global frame)
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from pc3d.geometry.boxes import wrap_angle
from pc3d.geometry.points_in_boxes import points_in_boxes_count

from . import labels as L
from .outdoor import OutdoorScene
from .primitives import rot_z
from .sensor import LidarSpec, Sweep, sweep
from .world import World


@dataclass
class SimFrame:
    index: int
    time: float
    points: np.ndarray
    semantic: np.ndarray
    instance: np.ndarray
    boxes: np.ndarray
    kinds: list[str]
    track_ids: np.ndarray
    num_points: np.ndarray
    sensor_pose: np.ndarray
    vehicle_pose: np.ndarray
    sweep: Sweep
    world: World
    road_sensor_pose: np.ndarray
    flow: np.ndarray | None = None
    extra: dict = field(default_factory=dict)


def _inverse(m: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = m[:3, :3].T
    out[:3, 3] = -m[:3, :3].T @ m[:3, 3]
    return out


def _actor_poses(scene: OutdoorScene, t: float) -> np.ndarray:
    """[A, 4, 4] box frame -> road frame of every actor at t."""
    out = np.tile(np.eye(4), (len(scene.actors), 1, 1))
    for i, actor in enumerate(scene.actors):
        x, y, yaw = actor.trajectory.state(t)
        out[i, :3, :3] = rot_z(yaw)
        out[i, :3, 3] = (x, y, 0.0)
    return out


def simulate_sequence(scene: OutdoorScene, spec: LidarSpec, frames: int, rng: np.random.Generator, *,
                      dt: float = 0.1, start: float = 0.0, flow: bool = False,
                      distortion: bool = False) -> Iterator[SimFrame]:
    """Yield `frames` frames at start, start + dt, ... of the scene seen by `spec` on the ego vehicle."""
    for index in range(frames):
        t = start + index * dt
        world = scene.world(t)
        vehicle = scene.vehicle_pose(t)
        sensor = vehicle @ spec.mount
        end = scene.vehicle_pose(t + spec.period) @ spec.mount if distortion else None
        sw = sweep(world, spec, sensor, rng, end)
        owner = world.actor[sw.primitive]
        semantic = world.semantic[sw.primitive].copy()
        on_ground = semantic == L.ROAD
        semantic[on_ground] = scene_ground_label(scene, sw.world[on_ground])
        track = np.array([a.track_id for a in scene.actors] + [0], np.int32)
        instance = track[np.where(owner >= 0, owner, len(scene.actors))]
        boxes, kinds, ids = _boxes_in_sensor(scene, t, sensor, spec.max_range)
        counts = (np.asarray(points_in_boxes_count(sw.points[:, :3], boxes[:, :7]), np.int32) if len(boxes)
                  else np.zeros(0, np.int32))
        frame = SimFrame(index, t, sw.points, semantic, instance, boxes, kinds, ids, counts,
                         scene.road_to_world @ sensor, scene.road_to_world @ vehicle, sw, world, sensor)
        frame.extra["actor_track"] = track[:-1]
        if flow:
            frame.flow = _scene_flow(scene, sw.world, owner, t, t + dt, sensor, scene.vehicle_pose(t + dt) @ spec.mount)
        yield frame


def scene_ground_label(scene: OutdoorScene, road_xyz: np.ndarray) -> np.ndarray:
    """SemanticKITTI ids of ground-plane hits: road between the lane edges, parking beyond, else terrain."""
    ay = np.abs(road_xyz[:, 1])
    out = np.full(len(road_xyz), L.ROAD, np.int32)
    if scene.parking:
        out[ay > scene.lanes * 3.5] = L.PARKING
    out[ay > scene.road_half] = L.TERRAIN
    return out


def _boxes_in_sensor(scene: OutdoorScene, t: float, sensor: np.ndarray, max_range: float):
    """Actors within max_range (BEV) as float32 [M, 9] sensor-frame boxes, their kinds and track ids."""
    road = scene.actor_boxes(t)
    if not len(road):
        return np.zeros((0, 9), np.float32), [], np.zeros(0, np.int32)
    inv = _inverse(sensor)
    centre = road[:, :3] @ inv[:3, :3].T + inv[:3, 3]
    keep = np.linalg.norm(centre[:, :2], axis=1) < max_range
    sensor_yaw = np.arctan2(sensor[1, 0], sensor[0, 0])
    out = np.zeros((int(keep.sum()), 9), np.float32)
    out[:, :3] = centre[keep]
    out[:, 3:6] = road[keep, 3:6]
    out[:, 6] = wrap_angle(road[keep, 6] - sensor_yaw)
    vel = np.concatenate([road[keep, 7:9], np.zeros((out.shape[0], 1))], 1) @ inv[:3, :3].T
    out[:, 7:9] = vel[:, :2]
    idx = np.flatnonzero(keep)
    return out, [scene.actors[i].kind for i in idx], np.array([scene.actors[i].track_id for i in idx], np.int32)


def _scene_flow(scene: OutdoorScene, road_xyz: np.ndarray, owner: np.ndarray, t0: float, t1: float,
                sensor0: np.ndarray, sensor1: np.ndarray) -> np.ndarray:
    """float32 [N, 3]: position at t1 in sensor frame t1 minus position at t0 in sensor frame t0."""
    moved = road_xyz.copy()
    if scene.actors:
        p0, p1 = _actor_poses(scene, t0), _actor_poses(scene, t1)
        step = p1 @ np.linalg.inv(p0)
        has = owner >= 0
        m = step[owner[has]]
        moved[has] = np.einsum("nij,nj->ni", m[:, :3, :3], road_xyz[has]) + m[:, :3, 3]
    inv0, inv1 = _inverse(sensor0), _inverse(sensor1)
    before = road_xyz @ inv0[:3, :3].T + inv0[:3, 3]
    after = moved @ inv1[:3, :3].T + inv1[:3, 3]
    return (after - before).astype(np.float32)
