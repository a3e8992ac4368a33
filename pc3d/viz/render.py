"""Headless rendering of a scene to PNG with Open3D's OffscreenRenderer (Filament on Vulkan / Mesa),
with the pure-numpy BEV image as the fallback when no renderer is available."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np

from pc3d.viz.bev import render_bev
from pc3d.viz.png import write_png
from pc3d.viz.scene import Scene, geometries

log = logging.getLogger(__name__)


class OffscreenRenderer:
    """Reusable offscreen renderer (creating one costs seconds): render(scene) -> RGB uint8 [H, W, 3].

    The camera looks from behind and above the sensor towards `look_at` (LiDAR frame), the view a
    driver would have of the detections ahead."""

    def __init__(self, width: int = 1280, height: int = 720, point_size: float = 2.0,
                 eye: Sequence[float] = (-6.0, 0.0, 11.0), look_at: Sequence[float] = (20.0, 0.0, -2.0),
                 fov: float = 60.0, color_mode: str = "height", background: Sequence[float] = (0.04, 0.04, 0.06)):
        from open3d.visualization import rendering

        self._rendering = rendering
        self.renderer = rendering.OffscreenRenderer(int(width), int(height))
        self.renderer.scene.set_background([*background, 1.0])
        self.point_material = rendering.MaterialRecord()
        self.point_material.shader = "defaultUnlit"
        self.point_material.point_size = float(point_size)
        self.line_material = rendering.MaterialRecord()
        self.line_material.shader = "unlitLine"
        self.line_material.line_width = 3.0
        self.eye, self.look_at, self.fov, self.color_mode = list(eye), list(look_at), fov, color_mode

    def render(self, scene: Scene) -> np.ndarray:
        s = self.renderer.scene
        s.clear_geometry()
        mode = "class" if scene.point_labels is not None else self.color_mode
        for name, geom in geometries(scene, mode):
            s.add_geometry(name, geom, self.point_material if name == "points" else self.line_material)
        look_at, eye = self.camera(scene)
        self.renderer.setup_camera(self.fov, look_at, eye, [0.0, 0.0, 1.0])
        return np.asarray(self.renderer.render_to_image()).copy()

    def camera(self, scene: Scene) -> tuple[list[float], list[float]]:
        """(look_at, eye): the fixed driving view, or for view 'overview' a view from above one corner that
        frames the points' bounding box (rooms, single objects)."""
        if scene.view != "overview" or not len(scene.points):
            return self.look_at, self.eye
        xyz = np.asarray(scene.points[:, :3], np.float64)
        lo, hi = np.percentile(xyz, 1, axis=0), np.percentile(xyz, 99, axis=0)
        centre, extent = (lo + hi) / 2, float(np.linalg.norm(hi - lo))
        eye = centre + extent * np.array([-0.45, -0.55, 0.75])
        return centre.tolist(), eye.tolist()


def open3d_available() -> bool:
    try:
        import open3d  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def render_scene_png(scene: Scene, path: str | PathLike, renderer: OffscreenRenderer | None = None,
                     mode: str = "auto", bev_area: Sequence[float] = (0.0, -40.0, -3.0, 70.4, 40.0, 1.0),
                     bev_resolution: float = 0.1, color_mode: str = "height") -> tuple[Path, str]:
    """Write the scene as a PNG: mode '3d' (Open3D), 'bev' (numpy) or 'auto' (3D, else BEV with a warning).
    color_mode: the BEV image's point colours without class labels (the 3D renderer has its own). Returns
    (path, the mode used)."""
    if mode in ("3d", "auto"):
        try:
            renderer = renderer or OffscreenRenderer()
            return write_png(path, renderer.render(scene)), "3d"
        except Exception as exc:  # noqa: BLE001 - any renderer failure falls back to the BEV image
            if mode == "3d":
                raise
            log.warning("3D rendering unavailable (%s: %s); writing a BEV image instead", type(exc).__name__, exc)
    image = render_bev(scene.points, scene.gt_boxes, scene.pred_boxes, scene.pred_labels, bev_area, bev_resolution,
                       "class" if scene.point_labels is not None else color_mode, scene.point_labels, scene.palette,
                       scene.flow, scene.pred_colors())
    return write_png(path, image), "bev"


def write_video(frames: Sequence[str | PathLike], path: str | PathLike, fps: int = 10) -> Path | None:
    """Encode PNGs named with consecutive six-digit numbers in one folder (000000.png, 000001.png, ..., as
    tools/visualize.py writes them) to a video with ffmpeg when it is on PATH (None otherwise). Exactly these
    frames: the sequence starts at the first one's number and stops after len(frames), so PNGs an earlier, longer
    run left in the folder stay out. ValueError for frames not so named."""
    import shutil
    import subprocess

    paths = [Path(f) for f in frames]
    first = int(paths[0].stem) if paths and paths[0].stem.isdigit() else 0
    expected = [paths[0].parent / f"{first + i:06d}.png" for i in range(len(paths))] if paths else []
    if paths != expected:
        raise ValueError(f"write_video needs consecutive numbered PNGs in one folder (000000.png, ...), got "
                         f"{[str(p) for p in paths[:3]]}...")
    ffmpeg = shutil.which("ffmpeg")
    if not ffmpeg or not paths:
        return None
    pattern = str(paths[0].parent / "%06d.png")
    cmd = [ffmpeg, "-y", "-loglevel", "error", "-framerate", str(fps), "-start_number", str(first), "-i", pattern,
           "-frames:v", str(len(paths)), "-pix_fmt", "yuv420p", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", str(path)]
    return Path(path) if subprocess.run(cmd, check=False).returncode == 0 else None
