"""pc3d: 3D point-cloud perception (detection, segmentation, MOS, scene flow) on CPU and GPU.

Importing pc3d is cheap and side-effect free: it imports neither open3d, spconv nor pyarrow, and
changes no environment variable or thread setting.
"""
__version__ = "0.1.0"
