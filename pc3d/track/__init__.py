"""Multi-object tracking of detections over a sequence: the greedy tracker (pc3d.track.greedy) and its use on
boxes in a moving sensor's frame (pc3d.track.world)."""
from pc3d.track.greedy import DEFAULT_MAX_DISTANCE, GreedyTracker, max_distances, max_speeds, parse_gates
from pc3d.track.world import update_in_world

__all__ = ["DEFAULT_MAX_DISTANCE", "GreedyTracker", "max_distances", "max_speeds", "parse_gates", "update_in_world"]
