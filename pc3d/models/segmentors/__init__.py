"""Segmentors: a sparse backbone plus a point-level head, shared by outdoor and indoor data."""
