"""A KITTI-like dataset generated on the fly by the simulated world (pc3d.sim): no files, for quick runs.

Frame i of a split is a fresh street scene seeded by (sim_seed, split offset + i), swept once by
the chosen LiDAR preset, so the same (sim_seed, split, i) always gives the same frame. Boxes in the
preset's sensor frame are the LiDAR-frame boxes of the contract; sim kinds map to KITTI types (car ->
Car, van -> Van, ...), and objects without a single LiDAR point are not boxes (as in the KITTI
labels the simulator writes).
"""
from __future__ import annotations

import numpy as np

from .dataset import PointCloudDataset
from .kitti import KITTI_CLASSES

# scenes of different splits never coincide: split s uses scene indices offset + i
SPLIT_OFFSET = {"train": 0, "trainval": 0, "val": 10**6, "test": 2 * 10**6}


class SimulatedKittiDataset(PointCloudDataset):
    """`frames` simulated frames: points [N, 4] (x, y, z, intensity), gt_boxes [M, 7], gt_labels.

    sensor: a pc3d.sim LiDAR preset (kitti, waymo, lidar_32); columns: its azimuth resolution
    (fewer columns = fewer points = faster); density scales the number of road users. fov_only
    keeps the KITTI camera's field of view, as KittiDataset does.
    """

    feature_names = ("intensity",)

    def __init__(self, split: str = "train", frames: int = 100, sim_seed: int = 0, class_names=KITTI_CLASSES,
                 sensor: str = "kitti",
                 columns: int | None = None, density: float = 1.0, fov_only: bool = False,
                 transforms=None, augmentations=None, voxelizer=None, point_cloud_range=None, voxel_size=None,
                 seed: int | None = None, skip_bad_frames: bool = False, training: bool | None = None):
        super().__init__(transforms, augmentations, voxelizer, point_cloud_range, voxel_size, seed, skip_bad_frames,
                         training)
        self.split = split
        self.offset = SPLIT_OFFSET.get(split, 0)
        self.frames = [f"sim{sim_seed}_{split}_{i:06d}" for i in range(int(frames))]
        self.sim_seed, self.sensor, self.columns, self.density = int(sim_seed), sensor, columns, float(density)
        self.class_names = list(class_names)
        self.fov_only = fov_only

    def load(self, index: int) -> dict:
        from pc3d.sim.api import scene_rng, sensor_spec
        from pc3d.sim.ground_truth import in_camera_fov, kitti_calib
        from pc3d.sim.labels import KITTI_TYPE
        from pc3d.sim.outdoor import make_outdoor_scene
        from pc3d.sim.simulator import simulate_sequence

        spec = sensor_spec(self.sensor, self.columns)
        scene = make_outdoor_scene(scene_rng(self.sim_seed, self.offset + index), duration=0.2, density=self.density)
        frame = next(simulate_sequence(scene, spec, 1, scene_rng(self.sim_seed, self.offset + index, 1)))
        points = frame.points.astype(np.float32)
        if self.fov_only:
            points = points[in_camera_fov(points, kitti_calib())]
        seen = frame.num_points > 0
        names = np.asarray([KITTI_TYPE[k] for k in frame.kinds], dtype=str).reshape(-1)
        train = seen & np.isin(names, self.class_names)
        return {"frame_id": self.frames[index], "points": points,
                "gt_boxes": frame.boxes[train, :7].astype(np.float32),
                "gt_labels": np.asarray([self.class_names.index(n) + 1 for n in names[train]], np.int64),
                "metadata": {"annos": {"name": names[seen], "gt_boxes_lidar": frame.boxes[seen, :7],
                                       "num_points": frame.num_points[seen]}, "source": "pc3d.sim"}}
