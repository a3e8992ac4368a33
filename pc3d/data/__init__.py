"""Datasets, augmentation and batching.

Loaders for KITTI, SemanticKITTI, Waymo v2 (parquet), ScanNet v2, scene flow and the simulated world
read the official on-disk layouts unchanged and convert to the LiDAR frame at the edge; composable
transforms augment points, boxes, labels and flow together; collate builds the one documented batch
structure; the GT database supports ground-truth sampling.
"""
