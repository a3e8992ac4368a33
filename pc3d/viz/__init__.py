"""Visualisation: the Open3D viewer, headless rendering of the same scenes to PNG or video, and
bird's-eye-view plots. open3d is imported lazily, inside the functions that need it.
"""
from .bev import render_bev
from .colors import point_colors
from .png import encode_png, write_png
from .render import OffscreenRenderer, open3d_available, render_scene_png, write_video
from .scene import Scene, box_lines
from .viewer import Viewer

__all__ = ["OffscreenRenderer", "Scene", "Viewer", "box_lines", "encode_png", "open3d_available", "point_colors",
           "render_bev", "render_scene_png", "write_png", "write_video"]
