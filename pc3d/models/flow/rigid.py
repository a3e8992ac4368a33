"""The dominant rigid motion of a flow field, and flow snapped to it (ego motion on the static points).

In a LiDAR sequence every static point moves by one rigid transform, the inverse of the sensor's motion; a
learned flow scatters around it by the spacing of the second sweep (the transport matches surfaces, not
points). Fitting that transform to all points, robustly, and giving its flow to the points that agree with it
averages the scatter away; points that move on their own disagree and keep their flow.

    weighted_kabsch(src, dst, w)         -> R [3, 3], t [3]: argmin sum_i w_i |R src_i + t - dst_i|^2
    robust_rigid_fit(xyz, flow, ...)     -> R, t, residual [N]: iteratively reweighted (Cauchy weights, scale
                                            = 1.4826 median residual, at least min_scale) from uniform weights
    snap_to_ego_motion(xyz1, xyz2, flow, ...)
                                         -> flow with R xyz1 + t - xyz1 on the points that follow the motion,
                                            the fit refined by point-to-plane ICP of the first cloud onto the
                                            second (pc3d.geometry.registration): the fit
                                            starts where the flow points and the surfaces finish it, so a flow
                                            biased towards the training set's typical motion is corrected;
                                            with `parts`, then snap_rigid_parts on the points left
    snap_rigid_parts(src, dst, flow, free, normals, ...)
                                         -> flow with each cluster of the free points snapped to its own rigid
                                            motion (fit + ICP, the same tests): objects that move on their own
    EgoMotion(**kwargs)(xyz1, xyz2, flow, offsets1, offsets2)
                                         -> snap_to_ego_motion pair by pair of a batch (a model's stage)

Conventions: xyz, flow [N, 3] of one cloud; the fit runs in float64 (the SVD of a 3 x 3 covariance) and the
result comes back in the flow's dtype. Deterministic: no sampling (unlike RANSAC). The moving points must
be a minority for the fit to find the ego motion: true of a LiDAR scan, where most of what is seen is static.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from pc3d.errors import ConfigError
from pc3d.geometry.neighbors import knn, radius_components
from pc3d.geometry.registration import point_to_plane_icp, surface_normals


def weighted_kabsch(src: torch.Tensor, dst: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The proper rotation R and translation t minimising sum_i w_i |R src_i + t - dst_i|^2 (Kabsch / Umeyama
    without scale; a reflection is turned into the nearest rotation). src, dst [N, 3]; weights [N] >= 0 with a
    positive sum."""
    w = weights.double() / weights.double().sum()
    src, dst = src.double(), dst.double()
    mean_src, mean_dst = w @ src, w @ dst
    cov = (src - mean_src).T @ ((dst - mean_dst) * w[:, None])
    u, _, vh = torch.linalg.svd(cov)
    sign = torch.ones(3, dtype=torch.float64, device=src.device)
    sign[2] = torch.sign(torch.linalg.det(vh.T @ u.T))
    rotation = vh.T @ torch.diag(sign) @ u.T
    return rotation, mean_dst - rotation @ mean_src


def robust_rigid_fit(xyz: torch.Tensor, flow: torch.Tensor, iters: int = 10,
                     min_scale: float = 0.02) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(R, t, residual [N]) of the rigid motion most of `flow` follows: iteratively reweighted least squares
    with Cauchy weights 1 / (1 + (r / c)^2), c = max(1.4826 * median(r), min_scale) metres, from uniform
    weights. residual: |R xyz + t - (xyz + flow)| per point, float64."""
    if len(xyz) < 3:
        raise ValueError(f"a rigid fit needs at least 3 points, got {len(xyz)}")
    src, dst = xyz.double(), (xyz + flow).double()
    weights = torch.ones(len(src), dtype=torch.float64, device=src.device)
    for _ in range(iters):
        rotation, translation = weighted_kabsch(src, dst, weights)
        residual = (src @ rotation.T + translation - dst).norm(dim=1)
        scale = max(1.4826 * float(residual.median()), min_scale)
        weights = 1.0 / (1.0 + (residual / scale) ** 2)
    rotation, translation = weighted_kabsch(src, dst, weights)
    residual = (src @ rotation.T + translation - dst).norm(dim=1)
    return rotation, translation, residual


def _on_surface(moved: np.ndarray, target: np.ndarray, normals: np.ndarray, max_distance: float,
                threshold: float) -> np.ndarray:
    """bool [N]: moved points within `threshold` metres of the plane of their nearest target point, which
    must be within max_distance."""
    dist2, idx = knn(moved, target, 1)
    plane = np.abs(((moved - target[idx[:, 0]]) * normals[idx[:, 0]]).sum(1))
    return (dist2[:, 0] < max_distance**2) & (plane < threshold)


def _rigid_followers(source: np.ndarray, target: np.ndarray, normals: np.ndarray, flow: np.ndarray,
                     inlier_threshold: float | None, surface_threshold: float | None, icp_max_distance: float,
                     icp_iters: int) -> tuple[np.ndarray, np.ndarray]:
    """(rigid flow [N, 3], follows bool [N]) of the points source [N, 3] (float64) whose `flow` the robust
    rigid fit and point-to-plane ICP onto target explain: flow within inlier_threshold of the motion's (None:
    no such test) and, moved by it, on target's surface (surface_threshold None: no such test)."""
    rotation, translation, _ = robust_rigid_fit(torch.from_numpy(source), torch.from_numpy(flow))
    rotation, translation, _ = point_to_plane_icp(source, target, rotation.numpy(), translation.numpy(),
                                                  target_normals=normals, max_distance=icp_max_distance,
                                                  iters=icp_iters)
    moved = source @ rotation.T + translation
    follows = np.ones(len(source), bool)
    if inlier_threshold is not None:
        follows &= np.linalg.norm(moved - source - flow, axis=1) < inlier_threshold
    if surface_threshold is not None:
        follows &= _on_surface(moved, target, normals, icp_max_distance, surface_threshold)
    return moved - source, follows


def snap_to_ego_motion(xyz1: torch.Tensor, xyz2: torch.Tensor, flow: torch.Tensor,
                       inlier_threshold: float | None = None, surface_threshold: float | None = None,
                       icp_max_distance: float = 1.0, icp_iters: int = 30,
                       parts: Mapping[str, float] | None = None) -> torch.Tensor:
    """`flow` [N, 3] of the points xyz1 [N, 3] onto the cloud xyz2 [M, 3], with the ego motion's flow on the points
    that follow it: their own flow within `inlier_threshold` metres of the ego motion's (None: not tested) and
    (surface_threshold not None) moved by the ego motion, within surface_threshold metres of the second cloud's
    surface (the plane of the nearest point, which must be within icp_max_distance). The ego motion is the
    robust rigid fit of `flow`, refined by point-to-plane ICP (pairs up to icp_max_distance metres, icp_iters
    steps). `parts` (the keyword arguments of snap_rigid_parts but the clouds): then the points left are
    clustered and each cluster snapped to its own rigid motion. A pair with fewer than 6 points in either cloud
    (too few for ICP) keeps its flow."""
    if inlier_threshold is None and surface_threshold is None:
        raise ConfigError("snap_to_ego_motion needs inlier_threshold or surface_threshold (else every point follows)")
    if len(xyz1) < 6 or len(xyz2) < 6:
        return flow
    source, target = xyz1.detach().double().cpu().numpy(), xyz2.detach().double().cpu().numpy()
    flow64 = flow.detach().double().cpu().numpy()
    normals = surface_normals(target)
    rigid, follows = _rigid_followers(source, target, normals, flow64, inlier_threshold, surface_threshold,
                                      icp_max_distance, icp_iters)
    out = np.where(follows[:, None], rigid, flow64)
    if parts is not None:
        out = snap_rigid_parts(source, target, out, ~follows, normals, **parts)
    return torch.from_numpy(out).to(flow)


def snap_rigid_parts(source: np.ndarray, target: np.ndarray, flow: np.ndarray, free: np.ndarray,
                     normals: np.ndarray, radius: float = 0.6, min_points: int = 20,
                     inlier_threshold: float | None = 0.5, surface_threshold: float = 0.1,
                     icp_max_distance: float = 0.5, icp_iters: int = 20) -> np.ndarray:
    """flow [N, 3] (float64) of source [N, 3] onto target [M, 3] (normals [M, 3]) with each cluster of the `free`
    points (bool [N]; clusters linked by gaps up to `radius` metres, at least min_points points) snapped to
    its own rigid motion: the robust fit of its flow refined by point-to-plane ICP onto target, given to
    the cluster's points that follow it (the tests of _rigid_followers). Rigid objects moving on their own
    (cars, FlyingThings3D's shapes) then move as one body instead of point by point."""
    rows = np.flatnonzero(free)
    if len(rows) < min_points:
        return flow
    out = flow.copy()
    labels = radius_components(source[rows], radius)
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    for cluster in np.split(rows[order], bounds):
        if len(cluster) < min_points:
            continue
        rigid, follows = _rigid_followers(source[cluster], target, normals, flow[cluster], inlier_threshold,
                                          surface_threshold, icp_max_distance, icp_iters)
        out[cluster[follows]] = rigid[follows]
    return out


class EgoMotion(nn.Module):
    """snap_to_ego_motion as a model stage (no weights), pair by pair of a batch; kwargs as snap_to_ego_motion's
    (inlier_threshold, surface_threshold, icp_max_distance, icp_iters, parts)."""

    def __init__(self, inlier_threshold: float | None = None, surface_threshold: float | None = None,
                 icp_max_distance: float = 1.0, icp_iters: int = 30, parts: Mapping[str, float] | None = None):
        super().__init__()
        if inlier_threshold is None and surface_threshold is None:
            raise ConfigError("ego_motion needs inlier_threshold or surface_threshold")
        self.kwargs = {"inlier_threshold": inlier_threshold, "surface_threshold": surface_threshold,
                       "icp_max_distance": icp_max_distance, "icp_iters": icp_iters,
                       "parts": None if parts is None else dict(parts)}

    def forward(self, xyz1: torch.Tensor, xyz2: torch.Tensor, flow: torch.Tensor, offsets1: list[int],
                offsets2: list[int]) -> torch.Tensor:
        """flow [N, 3] of the first clouds' points xyz1 [N, 3] onto xyz2 [M, 3]; offsets: B + 1 rows per cloud."""
        return torch.cat([snap_to_ego_motion(xyz1[a:b], xyz2[c:d], flow[a:b], **self.kwargs)
                          for a, b, c, d in zip(offsets1[:-1], offsets1[1:], offsets2[:-1], offsets2[1:],
                                                strict=True)])
