"""Physics of the simulated world: beam geometry, ranges, boxes, surfaces and scene flow."""
from __future__ import annotations

import numpy as np
import pytest

from pc3d.sim.actors import INSET, build_parts, sample_size
from pc3d.sim.frames import scene_rng
from pc3d.sim.outdoor import make_outdoor_scene
from pc3d.sim.primitives import box, cylinder, distance_to_surface, ellipsoid, rot_x, rot_z, surface_points
from pc3d.sim.sensor import kitti_hdl64e, lidar_32, waymo_top
from pc3d.sim.simulator import simulate_sequence
from pc3d.sim.world import World


@pytest.fixture(scope="module")
def frames():
    """Two consecutive KITTI-preset frames (512 columns) of one scene, with flow."""
    spec = kitti_hdl64e(columns=512)
    scene = make_outdoor_scene(scene_rng(3, 0), duration=0.3)
    out = list(simulate_sequence(scene, spec, 2, scene_rng(3, 0, 1), flow=True))
    return spec, scene, out


def _to_road(frame, xyz):
    pose = frame.road_sensor_pose
    return xyz.astype(np.float64) @ pose[:3, :3].T + pose[:3, 3]


def test_presets_match_their_datasheets():
    kitti, waymo, v32 = kitti_hdl64e(), waymo_top(), lidar_32()
    assert kitti.beams == 64 and waymo.beams == 64 and v32.beams == 32
    np.testing.assert_allclose(np.rad2deg(kitti.inclinations[[0, -1]]), [2.0, -24.8])
    np.testing.assert_allclose(np.rad2deg(waymo.inclinations[[0, -1]]), [2.4, -17.6])
    assert kitti.mount[2, 3] == pytest.approx(1.73)
    for spec in (kitti, waymo, v32):
        assert np.all(np.diff(spec.inclinations) < 0)  # row 0 is the highest beam


def test_beam_elevations_match_the_preset(frames):
    spec, _, (frame, _) = frames
    row = frame.sweep.pixel // spec.columns
    pts = frame.points[:, :3].astype(np.float64)
    elevation = np.arctan2(pts[:, 2], np.linalg.norm(pts[:, :2], axis=1))
    np.testing.assert_allclose(elevation, spec.inclinations[row], atol=1e-5)
    assert len(np.unique(row)) >= 60


def test_ranges_within_the_sensor_limits(frames):
    spec, _, (frame, _) = frames
    rng = np.linalg.norm(frame.points[:, :3], axis=1)
    assert rng.max() < spec.max_range and rng.min() >= spec.min_range
    assert len(frame.points) > 0.8 * spec.beams * spec.columns


def test_object_points_lie_in_their_boxes(frames):
    _, _, (frame, _) = frames
    checked = 0
    for box_, track in zip(frame.boxes, frame.track_ids, strict=True):
        pts = frame.points[frame.instance == track, :3].astype(np.float64)
        if len(pts) < 10:
            continue
        local = pts - box_[:3]
        c, s = np.cos(box_[6]), np.sin(box_[6])
        x = c * local[:, 0] + s * local[:, 1]
        y = -s * local[:, 0] + c * local[:, 1]
        inside = (np.abs(x) <= box_[3] / 2) & (np.abs(y) <= box_[4] / 2) & (np.abs(local[:, 2]) <= box_[5] / 2)
        assert inside.mean() >= 0.95, (track, inside.mean())
        checked += 1
    assert checked >= 3


def test_points_lie_on_primitive_surfaces_within_the_noise(frames):
    spec, _, (frame, _) = frames
    road = _to_road(frame, frame.points[:, :3])
    dist = np.empty(len(road))
    for p in np.unique(frame.sweep.primitive):
        m = frame.sweep.primitive == p
        dist[m] = distance_to_surface(frame.world.rows[p], road[m])
    assert np.quantile(dist, 0.999) < 3.5 * spec.noise + 1e-3
    assert dist.max() < 6 * spec.noise + 1e-3


def test_flow_carries_points_onto_the_next_surfaces(frames):
    spec, scene, (first, second) = frames
    moved = first.points[:, :3] + first.flow
    road = _to_road(second, moved)
    dist = np.empty(len(road))
    for p in np.unique(first.sweep.primitive):
        m = first.sweep.primitive == p
        dist[m] = distance_to_surface(second.world.rows[p], road[m])
    assert np.quantile(dist, 0.99) < 3 * spec.noise + 1e-3
    # chamfer (one way) to the next sweep, against leaving the points where they were
    rng = np.random.default_rng(0)
    ground = np.isin(first.semantic, [40, 44, 48, 60, 72])  # planar ground slides onto itself: not informative
    near = np.flatnonzero((np.linalg.norm(first.points[:, :2], axis=1) < 15) & ~ground)
    query = near[rng.choice(len(near), 400, replace=False)]
    target = second.points[np.linalg.norm(second.points[:, :2], axis=1) < 20, :3]

    def chamfer(q):
        return float(np.mean([np.min(np.linalg.norm(target - v, axis=1)) for v in q]))

    with_flow, without = chamfer(moved[query]), chamfer(first.points[query, :3])
    assert with_flow < 0.15  # 512 columns: about 9 cm between neighbouring returns at 15 m
    if scene.ego.speed > 2:
        assert with_flow < 0.5 * without


def test_ray_caster_hits_each_primitive_kind_on_its_surface():
    rng = np.random.default_rng(1)
    rows = np.stack([box((10, 0, 1), (2, 3, 2), rot_z(0.3)), cylinder((0, 10, 1), 0.5, 2.0, rot_x(0.4)),
                     ellipsoid((-10, 0, 1), (1, 2, 0.5), rot_z(-0.7))])
    world = World(rows, np.zeros(3, np.int32), np.ones(3, np.float32), np.arange(3, dtype=np.int32))
    for p in range(3):
        targets = surface_points(rows[p], 200, rng)
        origin = np.zeros((200, 3))
        d = targets - origin
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        rng_m, prim, cos_inc = world.cast(origin, d, 100.0)
        hit = prim == p
        assert hit.mean() > 0.9
        pts = d[hit] * rng_m[hit, None]
        assert distance_to_surface(rows[p], pts).max() < 1e-6
        assert np.all((cos_inc[hit] >= 0) & (cos_inc[hit] <= 1.0001))


@pytest.mark.parametrize("seed", range(6))
def test_pedestrians_stay_in_their_box_and_show_their_heading(seed):
    """Every part of a pedestrian stays inside its box (front and back INSET inside), and the body is not the
    same after a half turn about z (feet and lean in front, a bag behind): its heading is in its shape."""
    rng = np.random.default_rng(seed)
    size = sample_size("pedestrian", rng)
    parts = build_parts("pedestrian", size, rng)
    pts = np.concatenate([surface_points(row, 4000, rng) for row in parts.rows])
    assert (np.abs(pts[:, 0]) <= size[0] / 2 - INSET + 0.01).all() and (np.abs(pts[:, 1]) <= size[1] / 2).all()
    assert pts[:, 2].min() >= -1e-9
    assert pts[:, 2].max() <= size[2] - INSET + 1e-9

    def cells(p):  # occupied 8 cm cells, centred on the axes so that a half turn maps cells onto cells
        return {tuple(c) for c in np.floor(p / 0.08 + 0.5).astype(int)}

    turned = pts * np.array([-1.0, -1.0, 1.0])
    same = cells(pts) & cells(turned)
    assert len(same) < 0.85 * len(cells(pts))  # about 0.75; 0.99 for a body symmetric under the turn


def test_red_lights_stop_the_ego_and_its_side_of_the_road():
    """stops: the ego and the traffic driving its way stand still together (one clock), the scene is otherwise
    the scene of the seed without stops, and the frames at a stop repeat the ego's pose."""
    from pc3d.sim.actors import Trajectory, stop_clock

    clock = stop_clock(np.random.default_rng(0), 10.0, 2, 0.6)
    traj = Trajectory(0.0, 0.0, 0.0, 5.0, clock=clock)
    standing = [t for t in np.arange(0.0, 12.0, 0.05) if traj.standing(t)]
    assert abs(len(standing) * 0.05 - 6.0) < 0.15  # 60 % of 10 s
    t0 = standing[0]
    assert traj.state(t0 + 0.5)[0] == pytest.approx(traj.state(t0)[0]) and traj.velocity(t0 + 0.5) == (0.0, 0.0)
    assert traj.state(11.0)[0] == pytest.approx(5.0 * (11.0 - 6.0))  # driving time after the last stop
    plain = make_outdoor_scene(scene_rng(2, 0), duration=10.0)
    lights = make_outdoor_scene(scene_rng(2, 0), duration=10.0, stops=2, standing=0.6)
    np.testing.assert_array_equal(plain.static.rows, lights.static.rows)
    assert [a.trajectory.x for a in plain.actors] == [a.trajectory.x for a in lights.actors]
    stop = next(t for t in np.arange(0.0, 10.0, 0.1) if lights.ego.standing(t))
    np.testing.assert_allclose(lights.vehicle_pose(stop), lights.vehicle_pose(stop + 0.3))
    before, later = lights.actor_boxes(stop), lights.actor_boxes(stop + 0.3)
    kinds = []
    for i, actor in enumerate(lights.actors):
        same_way = actor.kind != "pedestrian" and actor.trajectory.y < 0 and np.cos(actor.trajectory.yaw) > 0
        if actor.trajectory.speed > 0.3:
            moved = np.linalg.norm(later[i, :2] - before[i, :2]) > 0.1
            assert moved != same_way and actor.moving_at(stop) != same_way, (actor.kind, actor.trajectory)
            kinds.append(same_way)
    assert sum(kinds) >= 2 and len(kinds) - sum(kinds) >= 2  # waiting and passing road users were both checked


def test_zones_keep_fences_trees_and_poles_on_one_stretch_per_side():
    from pc3d.sim import labels as L
    from pc3d.sim.outdoor import ZONED

    plain = make_outdoor_scene(scene_rng(4, 0), duration=20.0)
    zoned = make_outdoor_scene(scene_rng(4, 0), duration=20.0, zones=True)
    rest = ~np.isin(plain.static.semantic, sum(ZONED, ()))
    np.testing.assert_array_equal(zoned.static.rows[~np.isin(zoned.static.semantic, sum(ZONED, ()))],
                                  plain.static.rows[rest])  # the other scenery is the scene of the seed
    span = plain.static.rows[:, 1].max() - plain.static.rows[:, 1].min()
    assert span > 200
    def of(scene, group, side):
        rows = scene.static.rows
        return rows[np.isin(scene.static.semantic, group) & (np.sign(rows[:, 2]) == side)]

    for group in ZONED:
        for side in (-1, 1):
            rows, before = of(zoned, group, side), of(plain, group, side)
            assert len(rows) <= len(before) and (len(rows) == 0 or np.ptp(rows[:, 1]) <= 50.0), (group, side)
            if group == (L.TRUNK, L.VEGETATION):  # trees line the whole road without zones
                assert 0 < len(rows) < len(before) / 2


def test_groups_add_pedestrians_walking_close_together_and_keep_the_scene_of_the_seed():
    from pc3d.geometry.iou import iou_bev

    plain = make_outdoor_scene(scene_rng(5, 0), duration=6.0)
    grouped = make_outdoor_scene(scene_rng(5, 0), duration=6.0, groups=3.0)
    n = len(plain.actors)
    np.testing.assert_array_equal(grouped.static.rows, plain.static.rows)
    assert [a.trajectory for a in grouped.actors[:n]] == [a.trajectory for a in plain.actors]
    added = grouped.actors[n:]
    assert len(added) >= 6 and {a.kind for a in added} == {"pedestrian"}
    for t in (0.0, 3.0, 6.0):
        boxes = grouped.actor_boxes(t)
        mine = boxes[n:]
        gap = np.hypot(*(mine[None, :, :2] - mine[:, None, :2]).transpose(2, 0, 1))
        np.fill_diagonal(gap, np.inf)
        mate = gap.argmin(1)
        assert (gap.min(1) < 1.6).all()  # each walks beside or behind a member of its group ...
        np.testing.assert_allclose(mine[mate, 7:9], mine[:, 7:9])  # ... at the group's velocity
        iou = iou_bev(boxes[:, :7].astype(np.float32), boxes[:, :7].astype(np.float32))
        np.fill_diagonal(iou, 0.0)
        assert iou.max() == 0.0  # and no two road users overlap
