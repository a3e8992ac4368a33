"""Box and point geometry in the LiDAR frame (x forward, y left, z up; metres, radians).

Box corners, LiDAR <-> camera conversions, heading wrapping, points-in-boxes, exact rotated BEV and
3D IoU, rotated and circle NMS, box coders, range-image projection and point neighbourhoods.
Boxes are float32 [M, 7 (+2)]: x, y, z, dx, dy, dz, heading (, vx, vy).
"""
from .box_coders import CenterPointCoder, ResidualCoder
from .boxes import (
    alpha_from_rotation_y,
    boxes_camera_to_lidar,
    boxes_lidar_to_camera,
    boxes_to_corners,
    boxes_to_image_2d,
    enlarge_boxes,
    rotate_points_z,
    wrap_angle,
)
from .calib import KittiCalib
from .iou import iou_3d, iou_3d_aligned, iou_axis_aligned, iou_bev, iou_bev_aligned, iou_bev_nearest
from .neighbors import knn, radius_components, radius_neighbors
from .nms import nms_axis_aligned, nms_circle, nms_multiclass, nms_rotated
from .points_in_boxes import points_in_boxes, points_in_boxes_count
from .range_image import beam_inclinations, points_to_range_image, range_image_to_points, spherical_projection

__all__ = [
    "CenterPointCoder",
    "KittiCalib",
    "ResidualCoder",
    "alpha_from_rotation_y",
    "beam_inclinations",
    "boxes_camera_to_lidar",
    "boxes_lidar_to_camera",
    "boxes_to_corners",
    "boxes_to_image_2d",
    "enlarge_boxes",
    "iou_3d",
    "iou_3d_aligned",
    "iou_axis_aligned",
    "iou_bev",
    "iou_bev_aligned",
    "iou_bev_nearest",
    "knn",
    "nms_axis_aligned",
    "nms_circle",
    "nms_multiclass",
    "nms_rotated",
    "points_in_boxes",
    "points_in_boxes_count",
    "points_to_range_image",
    "radius_components",
    "radius_neighbors",
    "range_image_to_points",
    "rotate_points_z",
    "spherical_projection",
    "wrap_angle",
]
