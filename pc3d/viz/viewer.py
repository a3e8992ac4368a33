"""The interactive Open3D viewer: a sequence of scenes, N / right arrow for the next frame, P / left
arrow for the previous one, C to cycle the point colouring (height, intensity, rgb, class), Q to quit.
Prediction scores are printed to the terminal as each frame is shown (the legacy viewer draws no text)."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from pc3d.viz.scene import Scene, geometries

MODES = ("height", "intensity", "rgb", "class")


class Viewer:
    """Viewer(scenes).run(); scenes: a list of Scene or a callable index -> Scene with `count` frames."""

    def __init__(self, scenes: Sequence[Scene] | Callable[[int], Scene], count: int | None = None,
                 color_mode: str = "height", point_size: float = 2.0):
        self.get = scenes if callable(scenes) else scenes.__getitem__
        self.count = count if count is not None else len(scenes)
        self.index, self.color_mode, self.point_size = 0, color_mode, point_size

    def _show(self, vis) -> None:
        scene = self.get(self.index)
        view = vis.get_view_control().convert_to_pinhole_camera_parameters()
        vis.clear_geometries()
        for _, geom in geometries(scene, self.color_mode):
            vis.add_geometry(geom, reset_bounding_box=self._first)
        if not self._first:
            vis.get_view_control().convert_from_pinhole_camera_parameters(view, allow_arbitrary=True)
        self._first = False
        scores = "" if scene.pred_scores is None else " ".join(f"{s:.2f}" for s in np.asarray(scene.pred_scores))
        print(f"[{self.index + 1}/{self.count}] {scene.name}: {len(scene.points)} points, "
              f"{0 if scene.pred_boxes is None else len(scene.pred_boxes)} predictions {scores}", flush=True)

    def run(self) -> None:
        import open3d as o3d

        vis = o3d.visualization.VisualizerWithKeyCallback()
        vis.create_window("pc3d", 1280, 800)
        vis.get_render_option().point_size = self.point_size
        vis.get_render_option().background_color = np.array([0.04, 0.04, 0.06])
        self._first = True

        def step(delta):
            def cb(v):
                self.index = (self.index + delta) % self.count
                self._show(v)
                return False
            return cb

        def cycle(v):
            self.color_mode = MODES[(MODES.index(self.color_mode) + 1) % len(MODES)]
            self._show(v)
            return False

        for key, fn in ((ord("N"), step(1)), (262, step(1)), (ord("P"), step(-1)), (263, step(-1)),
                        (ord("C"), cycle)):
            vis.register_key_callback(key, fn)
        self._show(vis)
        vis.run()
        vis.destroy_window()
