"""Visualisation: the Open3D viewer, headless rendering of the same scenes to PNG or video, and
bird's-eye-view plots. open3d is imported lazily, inside the functions that need it.
"""
