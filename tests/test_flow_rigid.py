"""The rigid-motion fit of a flow field (pc3d.models.flow.rigid) against transforms built by hand."""
import math

import numpy as np
import pytest
import torch

from pc3d.errors import ConfigError
from pc3d.models.flow.rigid import EgoMotion, robust_rigid_fit, snap_to_ego_motion, weighted_kabsch


def rotation_z(degrees: float) -> torch.Tensor:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def cloud(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 20 - 10


def test_kabsch_recovers_a_transform_and_never_a_reflection():
    src = cloud(50)
    rotation, translation = rotation_z(7.0), torch.tensor([0.8, -0.1, 0.05], dtype=torch.float64)
    r, t = weighted_kabsch(src, src @ rotation.T + translation, torch.ones(50))
    torch.testing.assert_close(r, rotation)
    torch.testing.assert_close(t, translation)
    # a mirror image is best matched by a reflection; the fit returns a proper rotation instead
    r, _ = weighted_kabsch(src, src * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64), torch.ones(50))
    assert torch.linalg.det(r).item() == pytest.approx(1.0)


def test_zero_weights_leave_points_out():
    src = cloud(40)
    dst = src + torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    dst[:10] += 5.0  # moved on their own
    weights = torch.ones(40)
    weights[:10] = 0
    _, t = weighted_kabsch(src, dst, weights)
    torch.testing.assert_close(t, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))


def test_robust_fit_ignores_a_moving_minority():
    xyz = cloud(400).float()
    ego = (xyz.double() @ rotation_z(2.0).T + torch.tensor([-0.9, 0.1, 0.0], dtype=torch.float64)
           - xyz.double()).float()
    noise = torch.randn(400, 3, generator=torch.Generator().manual_seed(1)) * 0.05
    flow = ego + noise
    flow[:100] = torch.tensor([1.5, 0.3, 0.0])  # a quarter of the points: a car driving its own way
    rotation, translation, residual = robust_rigid_fit(xyz, flow)
    torch.testing.assert_close(rotation, rotation_z(2.0), atol=2e-3, rtol=0)
    torch.testing.assert_close(translation, torch.tensor([-0.9, 0.1, 0.0], dtype=torch.float64), atol=2e-2, rtol=0)
    assert residual[:100].min() > 1.0 and residual[100:].median() < 0.1


def test_a_fit_needs_three_points():
    with pytest.raises(ValueError, match="at least 3"):
        robust_rigid_fit(torch.zeros(2, 3), torch.zeros(2, 3))


def street(seed: int, n: int) -> torch.Tensor:
    """n points sampled on a street's static surfaces: two facades along x, cross walls, poles and the tops of two
    parked cars, so every direction of motion is seen by some surface. Another seed samples other points on the
    same surfaces."""
    g = torch.Generator().manual_seed(seed)

    def u(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    parts = []
    for y in (-8.0, 9.0):  # facades
        parts.append(torch.stack([u(n // 4) * 30 + 2, torch.full((n // 4,), y), u(n // 4) * 6 - 1], 1))
    for x, y0 in ((12.0, -8.0), (25.0, 3.0)):  # cross walls
        parts.append(torch.stack([torch.full((n // 8,), x), u(n // 8) * 5 + y0, u(n // 8) * 4 - 1], 1))
    for x, y in ((6.0, 4.0), (15.0, -4.0), (20.0, 5.0), (28.0, -2.0)):  # poles of radius 0.2 m
        a = u(n // 16) * 2 * math.pi
        parts.append(torch.stack([x + 0.2 * torch.cos(a), y + 0.2 * torch.sin(a), u(n // 16) * 4 - 1], 1))
    for x, y in ((8.0, -6.0), (18.0, 6.0)):  # car roofs, 4 x 1.8 m at 0.5 m
        parts.append(torch.stack([u(n // 16) * 4 + x, u(n // 16) * 1.8 + y, torch.full((n // 16,), 0.5)], 1))
    return torch.cat(parts)


def test_icp_recovers_the_sensor_motion_between_independent_samplings():
    from pc3d.geometry.registration import point_to_plane_icp, surface_normals

    plane = torch.stack([torch.rand(200, dtype=torch.float64), torch.rand(200, dtype=torch.float64),
                         torch.zeros(200, dtype=torch.float64)], 1)
    assert (surface_normals(plane)[:, 2] ** 2 > 1 - 1e-9).all()
    rotation, translation = rotation_z(1.5).numpy(), [-0.8, 0.05, 0.0]
    first = street(0, 4000)
    second = street(1, 4000) @ torch.from_numpy(rotation).T + torch.tensor(translation, dtype=torch.float64)
    # the first cloud's points expressed in the second's frame: find R, t with R p + t on the second's surfaces
    r, t, stats = point_to_plane_icp(first.numpy(), second.numpy(), rotation_z(0.5).numpy(), [-0.5, 0.0, 0.0])
    assert stats.converged and stats.pairs > 4000
    np.testing.assert_allclose(r, rotation, atol=1e-3)
    np.testing.assert_allclose(t, translation, atol=1e-2)


def test_a_biased_flow_snaps_to_the_ego_motion_and_a_mover_keeps_its_flow():
    rotation, translation = rotation_z(1.0), torch.tensor([-0.9, 0.0, 0.0], dtype=torch.float64)
    xyz1 = street(0, 4000)
    car = torch.tensor([10.0, 0.0, 0.0], dtype=torch.float64) + torch.rand(
        300, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * torch.tensor([4.0, 1.8, 1.5])
    xyz1 = torch.cat([xyz1, car])
    ego = xyz1 @ rotation.T + translation - xyz1
    own = ego.clone()
    own[-300:] += torch.tensor([1.2, 0.0, 0.0], dtype=torch.float64)  # the car drives 12 m/s
    xyz2 = torch.cat([street(1, 4000) @ rotation.T + translation, xyz1[-300:] + own[-300:]])
    flow = (own * 0.75).float()  # the network's typical error: too slow a motion everywhere
    snapped = snap_to_ego_motion(xyz1.float(), xyz2.float(), flow, inlier_threshold=1.0, surface_threshold=0.1)
    static_error = (snapped[:-300].double() - ego[:-300]).norm(dim=1).mean()
    assert static_error < 0.02 < (flow[:-300].double() - ego[:-300]).norm(dim=1).mean()
    torch.testing.assert_close(snapped[-300:], flow[-300:])  # 1.2 m off the ego motion: not snapped


def test_a_moving_car_snaps_to_its_own_rigid_motion_with_parts():
    """The same street, the same slow network: the car, left over by the ego motion, is a cluster that gets its
    own fitted and ICP-refined motion; with the ego motion alone it keeps the network's flow."""
    rotation, translation = rotation_z(1.0), torch.tensor([-0.9, 0.0, 0.0], dtype=torch.float64)
    car = torch.tensor([10.0, 0.0, 0.0], dtype=torch.float64) + torch.rand(
        300, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * torch.tensor([4.0, 1.8, 1.5])
    xyz1 = torch.cat([street(0, 4000), car])
    truth = xyz1 @ rotation.T + translation - xyz1
    truth[-300:] += torch.tensor([1.2, 0.1, 0.0], dtype=torch.float64)
    xyz2 = torch.cat([street(1, 4000) @ rotation.T + translation, xyz1[-300:] + truth[-300:]])
    flow = (truth * 0.75).float()
    ego_only = snap_to_ego_motion(xyz1.float(), xyz2.float(), flow, inlier_threshold=0.5, surface_threshold=0.03)
    parts = snap_to_ego_motion(xyz1.float(), xyz2.float(), flow, inlier_threshold=0.5, surface_threshold=0.03,
                               parts={"radius": 0.6, "min_points": 20, "inlier_threshold": 0.5,
                                      "surface_threshold": 0.1, "icp_max_distance": 0.5})
    car_error = (parts[-300:].double() - truth[-300:]).norm(dim=1)
    assert car_error.max() < 0.01 < 0.05 < (ego_only[-300:].double() - truth[-300:]).norm(dim=1).mean()
    assert (parts[:-300].double() - truth[:-300]).norm(dim=1).mean() < 0.02


def test_ego_motion_without_any_test_is_refused():
    with pytest.raises(ConfigError, match="inlier_threshold or surface_threshold"):
        EgoMotion()
    with pytest.raises(ConfigError, match="inlier_threshold or surface_threshold"):
        snap_to_ego_motion(torch.rand(10, 3), torch.rand(10, 3), torch.zeros(10, 3))


def test_icp_baseline_gives_the_sensor_motion_of_a_static_street():
    from pc3d.data.batch import Collate
    from pc3d.models.flow.baselines import IcpFlow

    shift = np.array([-0.3, 0.02, 0.0])
    p1, p2 = street(0, 4000).numpy().astype(np.float32), (street(1, 4000).numpy() + shift).astype(np.float32)
    sample = {"frame_id": "a", "points": p1, "points2": p2, "flow": np.tile(shift, (len(p1), 1)).astype(np.float32)}
    with torch.no_grad():
        pred = IcpFlow().eval()(Collate()([sample]))[0]
    np.testing.assert_allclose(pred["flow"], sample["flow"], atol=0.02)


def test_a_pair_too_small_for_icp_keeps_its_flow():
    flow = torch.ones(4, 3)
    assert snap_to_ego_motion(torch.rand(4, 3), torch.rand(50, 3), flow, inlier_threshold=1.0) is flow
