"""Detectors (SECOND, PointPillars, CenterPoint): short classes that run their parts in order and add the losses."""
