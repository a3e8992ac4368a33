"""Waymo Open Dataset v2 layout: one parquet file per segment and component.

    {training,validation}/lidar/<segment>.parquet               TOP range images, both returns
    {training,validation}/lidar_box/<segment>.parquet           3D boxes in the vehicle frame
    {training,validation}/lidar_calibration/<segment>.parquet   extrinsic + beam inclinations
    {training,validation}/vehicle_pose/<segment>.parquet        world_from_vehicle per frame
    {training,validation}/lidar_segmentation/<segment>.parquet  TOP per-pixel (instance id, semantic class)

Column names and arrow types follow waymo-open-dataset v2 (``v2/perception/{lidar,box,context,
pose}.py``): ``key.segment_context_name``, ``key.frame_timestamp_micros``, ``key.laser_name``,
``[LiDARComponent].range_image_return1.values`` / ``.shape`` and so on. Range images are [H, W, 4]
(range, intensity, elongation, is_in_no_label_zone), row 0 the highest beam, column azimuths as in
the official range_image_utils; pixels without a return hold -1, and so does the no-label-zone flag of every
return (Waymo's value outside the zones; the simulated world has none). The second return is empty (all
-1). Beam inclinations are stored ascending (the official readers reverse them). Rolling-shutter
per-pixel poses (``lidar_pose``) are not written: the sweeps carry no ego-motion distortion.
Segmentation labels (``[LiDARSegmentationLabelComponent].range_image_return{1,2}``, int32 [H, W, 2]: instance
id, then the Segmentation.Type class of each pixel, 0 where there is no return) are written for every frame
(the real dataset labels every fifth TOP frame or so); return 2 is all 0, like its range image.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..frames import outdoor_frames
from ..labels import WAYMO_SEG_OF_RAW, WAYMO_TYPE
from ..simulator import SimFrame
from .settings import WriterSettings

LIDAR = "[LiDARComponent]"
BOX = "[LiDARBoxComponent]"
CALIB = "[LiDARCalibrationComponent]"
SEG = "[LiDARSegmentationLabelComponent]"
POSE = "[VehiclePoseComponent]"
TOP = 1
EPOCH_MICROS = 1_550_000_000_000_000


def segment_name(seed: int, index: int, frames: int) -> str:
    """A name shaped like Waymo's ('<20 digits>_<start>_000_<end>_000')."""
    return f"{seed % 10**10:010d}{index:010d}_0_000_{frames // 10}_{frames % 10}00"


def range_image(frame: SimFrame, empty: bool = False) -> np.ndarray:
    """float32 [H, W, 4] (range, intensity, elongation, no-label zone), -1 where there is no return. As in Waymo's
    files, a return outside every no-label zone is flagged -1 (1 inside one; OpenPCDet's converter keeps only the -1
    points); the simulated world has no such zones."""
    rng = frame.sweep.range_image
    out = np.full((*rng.shape, 4), -1.0, np.float32)
    if not empty:
        hit = rng > 0
        out[hit, 0] = rng[hit]
        out[hit, 1] = frame.sweep.intensity_image[hit]
        out[hit, 2] = 0.0
        out[hit, 3] = -1.0
    return out


_SEG_LUT = np.zeros(max(WAYMO_SEG_OF_RAW) + 1, np.int32)
_SEG_LUT[list(WAYMO_SEG_OF_RAW)] = list(WAYMO_SEG_OF_RAW.values())


def segmentation_image(frame: SimFrame) -> np.ndarray:
    """int32 [H, W, 2]: (instance id, Waymo segmentation class) of each pixel's return, 0 where none."""
    h, w = frame.sweep.range_image.shape
    out = np.zeros((h * w, 2), np.int32)
    out[frame.sweep.pixel, 0] = frame.instance
    out[frame.sweep.pixel, 1] = _SEG_LUT[frame.semantic]
    return out.reshape(h, w, 2)


class SegmentWriter:
    """Collects the frames of one segment and writes its four parquet files on close()."""

    def __init__(self, root: Path, split: str, name: str, spec):
        self.root, self.split, self.name, self.spec = Path(root), split, name, spec
        self.lidar: dict[str, list] = {k: [] for k in ("ts", "r1", "r2", "seg")}
        self.boxes: dict[str, list] = {}
        self.poses: list[tuple[int, list[float]]] = []

    def write(self, frame: SimFrame, timestamp: int) -> None:
        self.lidar["ts"].append(timestamp)
        self.lidar["r1"].append(range_image(frame))
        self.lidar["r2"].append(range_image(frame, empty=True))
        self.lidar["seg"].append(segmentation_image(frame))
        self.poses.append((timestamp, frame.vehicle_pose.ravel().tolist()))
        mount = self.spec.mount
        keep = frame.num_points > 0
        b = frame.boxes[keep].astype(np.float64)
        centre = b[:, :3] @ mount[:3, :3].T + mount[:3, 3]
        yaw = np.arctan2(mount[1, 0], mount[0, 0])
        heading = (b[:, 6] + yaw + np.pi) % (2 * np.pi) - np.pi
        # speeds in world axes, as Waymo's: the sensor-frame velocity turned into the vehicle, then the world frame
        speed = np.concatenate([b[:, 7:9], np.zeros((len(b), 1))], 1) @ mount[:3, :3].T @ frame.vehicle_pose[:3, :3].T
        counts = frame.num_points[keep].astype(np.int64)
        kinds = [k for k, ok in zip(frame.kinds, keep, strict=True) if ok]
        rows = {
            "key.segment_context_name": [self.name] * len(b),
            "key.frame_timestamp_micros": [timestamp] * len(b),
            "key.laser_object_id": [f"{self.name[:10]}_{int(t):06d}" for t in frame.track_ids[keep]],
            f"{BOX}.box.center.x": centre[:, 0], f"{BOX}.box.center.y": centre[:, 1],
            f"{BOX}.box.center.z": centre[:, 2],
            f"{BOX}.box.size.x": b[:, 3], f"{BOX}.box.size.y": b[:, 4], f"{BOX}.box.size.z": b[:, 5],
            f"{BOX}.box.heading": heading,
            f"{BOX}.type": [WAYMO_TYPE[k] for k in kinds],
            f"{BOX}.num_lidar_points_in_box": counts, f"{BOX}.num_top_lidar_points_in_box": counts,
            f"{BOX}.speed.x": speed[:, 0], f"{BOX}.speed.y": speed[:, 1], f"{BOX}.speed.z": speed[:, 2],
            f"{BOX}.acceleration.x": np.zeros(len(b)), f"{BOX}.acceleration.y": np.zeros(len(b)),
            f"{BOX}.acceleration.z": np.zeros(len(b)),
            f"{BOX}.difficulty_level.detection": np.where(counts <= 5, 2, 1),
            f"{BOX}.difficulty_level.tracking": np.where(counts <= 5, 2, 1),
        }
        for k, v in rows.items():
            self.boxes.setdefault(k, []).extend(list(v))

    def close(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        f64, i8, i64, s = pa.float64(), pa.int8(), pa.int64(), pa.string()
        n = len(self.lidar["ts"])
        key = {"key.segment_context_name": pa.array([self.name] * n, s),
               "key.frame_timestamp_micros": pa.array(self.lidar["ts"], i64)}

        def image_columns(ret: str, images: list[np.ndarray], component: str = LIDAR, kind=None) -> dict:
            values = pa.array([im.ravel() for im in images], pa.list_(kind or pa.float32()))
            shape = pa.array([list(im.shape) for im in images], pa.list_(pa.int32(), 3))
            return {f"{component}.range_image_{ret}.values": values, f"{component}.range_image_{ret}.shape": shape}

        lidar = {**key, "key.laser_name": pa.array([TOP] * n, i8), **image_columns("return1", self.lidar["r1"]),
                 **image_columns("return2", self.lidar["r2"])}
        segmentation = {**key, "key.laser_name": pa.array([TOP] * n, i8),
                        **image_columns("return1", self.lidar["seg"], SEG, pa.int32()),
                        **image_columns("return2", [np.zeros_like(im) for im in self.lidar["seg"]], SEG, pa.int32())}
        types = {"key.segment_context_name": s, "key.frame_timestamp_micros": i64, "key.laser_object_id": s,
                 f"{BOX}.type": i8, f"{BOX}.num_lidar_points_in_box": i64, f"{BOX}.num_top_lidar_points_in_box": i64,
                 f"{BOX}.difficulty_level.detection": i8, f"{BOX}.difficulty_level.tracking": i8}
        boxes = {k: pa.array(v, types.get(k, f64)) for k, v in self.boxes.items()}
        if not boxes:
            boxes = {k: pa.array([], t) for k, t in types.items()}
        inclinations = np.asarray(self.spec.inclinations, np.float64)
        calib = {"key.segment_context_name": pa.array([self.name], s), "key.laser_name": pa.array([TOP], i8),
                 f"{CALIB}.extrinsic.transform": pa.array([self.spec.mount.ravel().tolist()], pa.list_(f64, 16)),
                 f"{CALIB}.beam_inclination.min": pa.array([float(inclinations.min())], f64),
                 f"{CALIB}.beam_inclination.max": pa.array([float(inclinations.max())], f64),
                 f"{CALIB}.beam_inclination.values": pa.array([inclinations[::-1].tolist()], pa.list_(f64))}
        pose = {**key, f"{POSE}.world_from_vehicle.transform": pa.array([p for _, p in self.poses], pa.list_(f64, 16))}
        for component, columns in (("lidar", lidar), ("lidar_box", boxes), ("lidar_calibration", calib),
                                   ("vehicle_pose", pose), ("lidar_segmentation", segmentation)):
            folder = self.root / self.split / component
            folder.mkdir(parents=True, exist_ok=True)
            # one row group per frame (the lidar component has one row per frame): a loader reading frames in
            # shuffled order then decodes one frame's range images, not the whole segment's
            pq.write_table(pa.table(columns), folder / f"{self.name}.parquet",
                           row_group_size=1 if component in ("lidar", "lidar_segmentation") else None)


def write_waymo(settings: WriterSettings) -> None:
    """settings.frames frames under settings.out, one segment of sequence_length frames per scene; the last
    segment goes to validation when there are several. settings.distortion is not used: without
    per-pixel poses (lidar_pose) the files cannot describe a distorted sweep."""
    frames, length = settings.frames, settings.sequence_length
    n_segments = -(-frames // length)
    writer = None
    current = -1
    stream = outdoor_frames(frames, settings.seed, settings.spec, frames_per_scene=length,
                            **settings.scene())
    for n, (index, _, frame) in enumerate(stream):
        if index != current:
            if writer is not None:
                writer.close()
            split = "validation" if n_segments > 1 and index == n_segments - 1 else "training"
            name = segment_name(settings.seed, index, min(length, frames - index * length))
            writer = SegmentWriter(Path(settings.out), split, name, settings.spec)
            current = index
        writer.write(frame, EPOCH_MICROS + index * 10**9 + frame.index * 100_000)
        settings.tick(n + 1)
    if writer is not None:
        writer.close()
