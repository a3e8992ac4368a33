"""Camera-side ground truth of a KITTI-like rig: calibration, 2D boxes, truncation, occlusion.

The simulated rig uses the calibration of KITTI's training frame 000000 and its image size (1224 x 370;
most KITTI images are 1242 x 375, with a calibration of their own), so the
camera field of view, the label conventions and the difficulty levels (min 2D height, occlusion,
truncation) behave as on the real data.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pc3d.geometry.boxes import alpha_from_rotation_y, boxes_lidar_to_camera, boxes_to_corners, boxes_to_image_2d
from pc3d.geometry.calib import KittiCalib

from . import labels as L
from .simulator import SimFrame

IMAGE_SHAPE = (370, 1224)  # height, width: training frame 000000's image_2


def kitti_calib() -> KittiCalib:
    """KITTI training frame 000000's calibration (P0..P3, R0_rect, Tr_velo_to_cam, Tr_imu_to_velo)."""
    f, cu, cv = 7.070493e02, 6.040814e02, 1.805066e02

    def p(tx, ty, tz):
        return np.array([[f, 0, cu, tx], [0, f, cv, ty], [0, 0, 1, tz]])

    return KittiCalib(
        P0=p(0.0, 0.0, 0.0), P1=p(-3.797842e02, 0.0, 0.0), P2=p(4.575831e01, -3.454157e-01, 4.981016e-03),
        P3=p(-3.341081e02, 2.330660e00, 3.201153e-03),
        R0_rect=np.array([[9.999128e-01, 1.009263e-02, -8.511932e-03], [-1.012729e-02, 9.999406e-01, -4.037671e-03],
                          [8.470675e-03, 4.123522e-03, 9.999556e-01]]),
        Tr_velo_to_cam=np.array([[6.927964e-03, -9.999722e-01, -2.757829e-03, -2.457729e-02],
                                 [-1.162982e-03, 2.749836e-03, -9.999955e-01, -6.127237e-02],
                                 [9.999753e-01, 6.931141e-03, -1.143899e-03, -3.321029e-01]]),
        Tr_imu_to_velo=np.array([[9.999976e-01, 7.553071e-04, -2.035826e-03, -8.086759e-01],
                                 [-7.854027e-04, 9.998898e-01, -1.482298e-02, 3.195559e-01],
                                 [2.024406e-03, 1.482454e-02, 9.998881e-01, -7.997231e-01]]))


def camera_centre(calib: KittiCalib) -> np.ndarray:
    """The left colour camera's centre in the LiDAR frame, float64 [3]."""
    return np.asarray(calib.rect_to_lidar(np.array([[-calib.P2[0, 3] / calib.P2[0, 0], 0.0, 0.0]])))[0]


def in_camera_fov(points: np.ndarray, calib: KittiCalib, image_shape=IMAGE_SHAPE) -> np.ndarray:
    """bool [N]: LiDAR points that project into image 2 in front of the camera."""
    uv, depth = calib.lidar_to_image(np.asarray(points[:, :3], np.float64))
    h, w = image_shape
    return (depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)


@dataclass
class KittiObjects:
    """The label_2 rows of a frame: types, truncation, occlusion, alpha, bbox [M, 4], camera boxes [M, 7]."""

    types: list[str]
    truncated: np.ndarray
    occluded: np.ndarray
    alpha: np.ndarray
    bbox: np.ndarray
    camera_boxes: np.ndarray
    index: np.ndarray  # row of each labelled object in frame.boxes (-1 for DontCare)


def visible_fraction(frame: SimFrame, calib: KittiCalib, which: np.ndarray, samples: int = 8) -> np.ndarray:
    """Share of a grid of rays from the camera towards each box's volume that hits that object first."""
    origin = camera_centre(calib)
    u = (np.arange(samples) + 0.5) / samples - 0.5
    grid = np.stack(np.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
    out = np.zeros(len(which))
    dirs, owners = [], []
    for k, i in enumerate(which):
        b = frame.boxes[i]
        centre = b[:3].astype(np.float64)
        view = centre - origin
        side = np.array([-view[1], view[0], 0.0])
        side /= max(np.linalg.norm(side), 1e-9)
        half_w = 0.5 * (abs(np.cos(b[6] - np.arctan2(view[1], view[0]))) * b[4]
                        + abs(np.sin(b[6] - np.arctan2(view[1], view[0]))) * b[3])
        targets = centre + 0.8 * (grid[:, :1] * 2 * half_w * side + grid[:, 1:] * np.array([0.0, 0.0, b[5]]))
        d = targets - origin
        dirs.append(d / np.linalg.norm(d, axis=1, keepdims=True))
        owners.append(np.full(len(d), k))
    if not dirs:
        return out
    dirs = np.concatenate(dirs)
    owners = np.concatenate(owners)
    world_origin = frame.road_sensor_pose[:3, :3] @ origin + frame.road_sensor_pose[:3, 3]
    world_dirs = dirs @ frame.road_sensor_pose[:3, :3].T
    _, prim, _ = frame.world.cast(np.broadcast_to(world_origin, world_dirs.shape), world_dirs, 150.0)
    hit_actor = np.where(prim >= 0, frame.world.actor[np.maximum(prim, 0)], -1)
    track_of_actor = _track_lookup(frame)
    hit_track = np.where(hit_actor >= 0, track_of_actor[np.maximum(hit_actor, 0)], -1)
    wanted = frame.track_ids[which][owners]
    # rays that miss the object's own shape do not count (the grid samples the box, not the shape)
    actor_of = {int(t): a for a, t in enumerate(track_of_actor)}
    ray_actor = np.array([actor_of[int(t)] for t in frame.track_ids[which]])[owners]
    alone = np.isfinite(frame.world.cast_own(np.broadcast_to(world_origin, world_dirs.shape), world_dirs,
                                             ray_actor, 150.0))
    for k in range(len(which)):
        m = owners == k
        denom = max(int(alone[m].sum()), 1)
        out[k] = float(((hit_track[m] == wanted[m]) & alone[m]).sum()) / denom
    return out


def _track_lookup(frame: SimFrame) -> np.ndarray:
    return frame.extra["actor_track"]


def kitti_objects(frame: SimFrame, calib: KittiCalib, image_shape=IMAGE_SHAPE, max_depth: float = 80.0,
                  min_height_px: float = 15.0) -> KittiObjects:
    """KITTI label rows of the frame's objects that appear in image 2.

    Objects in the image with at least one LiDAR point and a 2D box at least min_height_px tall get
    full labels; the other objects in the image become DontCare regions, as in KITTI.
    """
    boxes = frame.boxes
    cam = np.asarray(boxes_lidar_to_camera(boxes[:, :7], calib), np.float64) if len(boxes) else np.zeros((0, 7))
    corners = np.asarray(boxes_to_corners(boxes[:, :7].astype(np.float64))) if len(boxes) else np.zeros((0, 8, 3))
    depth_ok = np.zeros(len(boxes), bool)
    if len(boxes):
        c_rect = np.asarray(calib.lidar_to_rect(corners.reshape(-1, 3))).reshape(-1, 8, 3)
        depth_ok = (c_rect[:, :, 2] > 0.5).all(axis=1) & (cam[:, 2] < max_depth)
    cand = np.flatnonzero(depth_ok)
    full = np.asarray(boxes_to_image_2d(boxes[cand, :7].astype(np.float64), calib), np.float64)
    clipped = np.asarray(boxes_to_image_2d(boxes[cand, :7].astype(np.float64), calib, image_shape), np.float64)
    h, w = image_shape
    inside = (full[:, 2] > 0) & (full[:, 0] < w - 1) & (full[:, 3] > 0) & (full[:, 1] < h - 1)
    cand, full, clipped = cand[inside], full[inside], clipped[inside]
    area_full = np.maximum((full[:, 2] - full[:, 0]) * (full[:, 3] - full[:, 1]), 1e-9)
    area_clip = np.maximum(clipped[:, 2] - clipped[:, 0], 0) * np.maximum(clipped[:, 3] - clipped[:, 1], 0)
    truncated = np.clip(1.0 - area_clip / area_full, 0.0, 1.0)
    labelled = (frame.num_points[cand] > 0) & (clipped[:, 3] - clipped[:, 1] >= min_height_px)
    vis = visible_fraction(frame, calib, cand[labelled])
    occluded = np.zeros(len(cand), np.int64)
    occluded[labelled] = np.where(vis >= 0.8, 0, np.where(vis >= 0.4, 1, 2))
    types = [L.KITTI_TYPE[frame.kinds[i]] if ok else "DontCare" for i, ok in zip(cand, labelled, strict=True)]
    alpha = alpha_from_rotation_y(cam[cand, 6], cam[cand, 0], cam[cand, 2])
    return KittiObjects(types, truncated, occluded, np.asarray(alpha, np.float64), clipped, cam[cand],
                        np.where(labelled, cand, -1))
