"""The simulated LiDAR world: procedural scenes, a spinning multi-beam LiDAR, exact ground truth.

Writers emit the official layouts of KITTI, SemanticKITTI, Waymo v2, ScanNet v2 and the scene-flow
sets, so every pipeline trains and evaluates end to end without downloading a dataset.
"""
