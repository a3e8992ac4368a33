"""Metrics as pure functions of arrays, on CPU: KITTI AP (R11 / R40), Waymo AP / APH, box velocity error
(nuScenes AVE), segmentation mIoU, MOS IoU, scene-flow EPE / accuracy and classification accuracy.
"""
from .classification import classification_metrics, mean_class_accuracy, overall_accuracy
from .kitti import KittiResult, format_kitti_table, kitti_eval
from .kitti_io import read_kitti_label, write_kitti_label
from .sceneflow import SceneFlowAccumulator, scene_flow_metrics
from .segmentation import (
    MosAccumulator,
    SegmentationAccumulator,
    confusion_matrix,
    missed_counts,
    mos_iou,
    pseudo_label_quality,
    segmentation_metrics,
)
from .velocity import velocity_error
from .waymo import waymo_eval

__all__ = [
    "KittiResult",
    "MosAccumulator",
    "SceneFlowAccumulator",
    "SegmentationAccumulator",
    "classification_metrics",
    "confusion_matrix",
    "format_kitti_table",
    "kitti_eval",
    "mean_class_accuracy",
    "missed_counts",
    "mos_iou",
    "overall_accuracy",
    "pseudo_label_quality",
    "read_kitti_label",
    "scene_flow_metrics",
    "segmentation_metrics",
    "velocity_error",
    "waymo_eval",
    "write_kitti_label",
]
