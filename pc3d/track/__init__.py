"""Multi-object tracking of detections over a sequence (pc3d.track.greedy)."""
from pc3d.track.greedy import DEFAULT_MAX_DISTANCE, GreedyTracker, max_distances

__all__ = ["DEFAULT_MAX_DISTANCE", "GreedyTracker", "max_distances"]
