"""SemanticKITTI layout (semantic-kitti-api README):

    sequences/SS/velodyne/NNNNNN.bin   float32 x, y, z, remission (N x 4)
    sequences/SS/labels/NNNNNN.label   uint32: semantic raw id (lower 16 bits) | instance id << 16
    sequences/SS/calib.txt             P0..P3 and Tr (velodyne -> left camera), 12 values each
    sequences/SS/poses.txt             3x4 left-camera poses relative to the first frame, one per line
    sequences/SS/times.txt             seconds since the first frame, one per line
    sequences/SS/boxes/NNNNNN.txt      (pc3d's, not the devkit's) exact boxes of the road users with points
                                       in the scan: "instance raw_id x y z dx dy dz heading" per line, LiDAR
                                       frame, instance = the instance id in the .label, raw_id the static
                                       SemanticKITTI id of its class (10 car, 18 truck, 30 person, 31 bicyclist)

Poses follow the devkit: LiDAR pose = Tr^-1 @ pose @ Tr, so pose = Tr @ lidar_pose @ Tr^-1.
Sequences are numbered 00, 01, ...; the devkit's split puts 08 in valid and 11..21 in test.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import labels as L
from ..frames import outdoor_frames
from ..ground_truth import kitti_calib
from ..sensor import velodyne_file_order
from ..simulator import SimFrame
from .settings import WriterSettings


def calib_text() -> str:
    calib = kitti_calib()
    # Tr: velodyne -> rectified camera (the odometry files have no R0_rect line: x = P_i Tr X)
    rows = [(f"P{i}", getattr(calib, f"P{i}")) for i in range(4)] + [("Tr", calib.velo_to_rect()[:3])]
    return "".join(f"{name}: " + " ".join(f"{v:.12e}" for v in m.ravel()) + "\n" for name, m in rows)


def encode_labels(semantic: np.ndarray, instance: np.ndarray) -> np.ndarray:
    """uint32 [N] = semantic | instance << 16."""
    return (semantic.astype(np.uint32) & 0xFFFF) | (instance.astype(np.uint32) << np.uint32(16))


def box_text(frame: SimFrame) -> str:
    """The boxes/NNNNNN.txt lines of a frame: the actors with at least one point in the scan."""
    return "".join(f"{int(track)} {L.SEMANTIC_ID[kind]} " + " ".join(f"{v:.6f}" for v in box[:7]) + "\n"
                   for box, kind, track, n in zip(frame.boxes, frame.kinds, frame.track_ids, frame.num_points,
                                                  strict=True) if n > 0)


class SequenceWriter:
    """Writes the frames of one sequence; poses and times are written on close()."""

    def __init__(self, root: str | Path, sequence: int):
        self.dir = Path(root) / "sequences" / f"{sequence:02d}"
        (self.dir / "velodyne").mkdir(parents=True, exist_ok=True)
        (self.dir / "labels").mkdir(parents=True, exist_ok=True)
        (self.dir / "boxes").mkdir(parents=True, exist_ok=True)
        self.tr = kitti_calib().velo_to_rect()  # calib.txt's Tr: the poses are in the rectified camera frame
        self.first: np.ndarray | None = None
        self.poses: list[np.ndarray] = []
        self.times: list[float] = []
        (self.dir / "calib.txt").write_text(calib_text())

    def write(self, frame: SimFrame) -> None:
        name = f"{len(self.poses):06d}"
        order = velodyne_file_order(frame.sweep)
        np.ascontiguousarray(frame.points[order], dtype="<f4").tofile(self.dir / "velodyne" / f"{name}.bin")
        labels = encode_labels(frame.semantic[order], frame.instance[order])
        labels.astype("<u4").tofile(self.dir / "labels" / f"{name}.label")
        (self.dir / "boxes" / f"{name}.txt").write_text(box_text(frame))
        if self.first is None:
            self.first = frame.sensor_pose
            self.t0 = frame.time
        lidar = np.linalg.inv(self.first) @ frame.sensor_pose
        self.poses.append(self.tr @ lidar @ np.linalg.inv(self.tr))
        self.times.append(frame.time - self.t0)

    def close(self) -> None:
        (self.dir / "poses.txt").write_text("".join(" ".join(f"{v:e}" for v in p[:3].ravel()) + "\n"
                                                    for p in self.poses))
        (self.dir / "times.txt").write_text("".join(f"{t:e}\n" for t in self.times))


def write_semantickitti(settings: WriterSettings) -> None:
    """settings.frames scans under settings.out/sequences, one sequence of sequence_length scans per scene."""
    writer = None
    current = -1
    frames = outdoor_frames(settings.frames, settings.seed, settings.spec, frames_per_scene=settings.sequence_length,
                            spacing=settings.scan_interval, **settings.scene())
    for n, (scene_index, _, frame) in enumerate(frames):
        if scene_index != current:
            if writer is not None:
                writer.close()
            writer = SequenceWriter(settings.out, scene_index)
            current = scene_index
        writer.write(frame)
        settings.tick(n + 1)
    if writer is not None:
        writer.close()
