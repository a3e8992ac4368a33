"""Detectors (SECOND, PointPillars, CenterPoint): one BEV pipeline (bev_detector.py) that builds its parts in
order with derived widths, runs them and adds the losses."""
from .bev_detector import BEVDetector
from .centerpoint import CenterPoint
from .pointpillars import PointPillars
from .second import SECOND

__all__ = ["BEVDetector", "SECOND", "CenterPoint", "PointPillars"]
