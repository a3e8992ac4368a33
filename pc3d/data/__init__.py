"""Datasets, augmentation and batching.

Loaders for KITTI, SemanticKITTI, Waymo v2 (parquet), ScanNet v2, scene flow, ModelNet40 and the simulated world
read the official on-disk layouts unchanged and convert to the LiDAR frame at the edge; composable
transforms augment points, boxes, labels and flow together; ``Collate`` builds the one documented
batch structure (pc3d.data.batch, whose docstring is the contract); the GT database supports
ground-truth sampling. Waymo (pyarrow) and ScanNet (plyfile) import their readers lazily.
"""
from .batch import BOX_KEYS, POINT_KEYS, Collate, check_sample, sparse_input
from .dataset import BadFrameWarning, DataWarning, PointCloudDataset, sample_seed, seed_worker
from .gt_database import GTDatabase, write_database
from .kitti import KITTI_CLASSES, KittiDataset
from .modelnet import ModelNet40
from .scannet import SCANNET20_CLASSES, ScanNetDataset
from .sceneflow import SceneFlowDataset
from .semantickitti import SemanticKittiDataset
from .sequence_flow import SequenceFlowDataset
from .simulated import SimulatedKittiDataset
from .waymo import WAYMO_CLASSES, WaymoDataset

__all__ = [
    "BOX_KEYS", "BadFrameWarning", "Collate", "DataWarning", "GTDatabase", "KITTI_CLASSES", "KittiDataset",
    "ModelNet40", "POINT_KEYS", "PointCloudDataset", "SCANNET20_CLASSES", "ScanNetDataset", "SceneFlowDataset",
    "SemanticKittiDataset", "SequenceFlowDataset", "SimulatedKittiDataset", "WAYMO_CLASSES", "WaymoDataset",
    "check_sample", "sample_seed", "seed_worker", "sparse_input", "write_database",
]
