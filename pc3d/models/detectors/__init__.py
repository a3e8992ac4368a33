"""Detectors (SECOND, PointPillars, CenterPoint): short classes that run their parts in order and add the losses."""
from .centerpoint import CenterPoint
from .pointpillars import PointPillars
from .second import SECOND

__all__ = ["SECOND", "CenterPoint", "PointPillars"]
