"""Detectors. Outdoor (SECOND, PointPillars, CenterPoint): one BEV pipeline (bev_detector.py) that builds its
parts in order with derived widths, runs them and adds the losses; Voxel R-CNN adds a second stage that
refines the BEV pipeline's boxes (voxel_rcnn.py). Indoor: a fully sparse TR3D-style
detector of axis-aligned boxes (indoor.py)."""
from .bev_detector import BEVDetector
from .centerpoint import CenterPoint
from .indoor import SparseIndoorDetector
from .pointpillars import PointPillars
from .second import SECOND
from .voxel_rcnn import VoxelRCNN

__all__ = ["BEVDetector", "SECOND", "CenterPoint", "PointPillars", "SparseIndoorDetector", "VoxelRCNN"]
