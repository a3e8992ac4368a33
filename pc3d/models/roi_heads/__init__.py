"""Second stages of two-stage detectors: Voxel R-CNN's RoI grid pooling and box refinement
(voxel_rcnn_head.py), its pooling layer (grid_pool.py) and RoI targets (roi_targets.py)."""
from .voxel_rcnn_head import VoxelRCNNHead

__all__ = ["VoxelRCNNHead"]
