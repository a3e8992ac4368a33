"""Waymo Open Dataset v2 (parquet; no TensorFlow), read with pyarrow a frame at a time:

    {training,validation,testing}/lidar/<segment>.parquet              range images, both returns
    {...}/lidar_calibration/<segment>.parquet                           extrinsic, beam inclinations
    {...}/lidar_box/<segment>.parquet                                   3D boxes (vehicle frame)
    {...}/lidar_pose/<segment>.parquet                                  per-pixel TOP poses (optional)
    {...}/vehicle_pose/<segment>.parquet                                world_from_vehicle (metadata)

Points come from the range images of both returns, as the official range_image_utils (pc3d.geometry.
range_image), in the vehicle frame (pc3d's LiDAR frame for Waymo): x, y, z, intensity, elongation.
Points in no-label zones are dropped (drop_no_label_zone) or kept. When a segment has no lidar_pose
component, no rolling-shutter correction is applied (the simulated world writes undistorted sweeps).
Memory stays bounded per segment: only the columns and the row group(s) holding the wanted frame are
read (the index lists every group one of its lasers' rows lies in; the last ones read are cached; lidar_pose
likewise, a row group at a time), calibration and boxes are read once per segment (small tables); a segment
whose tables cannot be read is never cached half-filled, so each of its frames raises the same error.
Labels: the training and validation splits need every segment's ``lidar_box`` file, testing reads it
when present (``labels`` overrides this). A lidar file without frames, a timestamp listed twice, a box
of negative size or of an unknown type is a DataFormatError naming the file.

Multi-sweep input (``n_past_scans`` > 0, CenterPoint's and OpenPCDet's multi-frame Waymo models): the sweeps
of the n_past_scans frames before the current one in its segment (fewer at a segment's start) are moved into
the current vehicle frame by the vehicle poses (``vehicle_pose``: inv(world_from_current) world_from_past,
pc3d.data.semantickitti.relative_pose / transform_points), and the cloud is the current sweep, then the past
ones newest first, with a time column last (-k * scan_period for the k-th sweep back, 0 for the current):
the same cloud, bit for bit, that pc3d.infer.scan_window.ScanWindow streams from a segment (tools/infer.py).
Boxes are the current frame's.
"""
from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np

from pc3d.errors import ConfigError, DataFormatError
from pc3d.geometry import beam_inclinations, range_image_to_points

from .dataset import PointCloudDataset
from .waymo_parquet import (
    BOX,
    BOX_COLUMNS,
    CALIB,
    LASER,
    LIDAR,
    OBJECT_ID,
    OPTIONAL_BOX_COLUMNS,
    SPLIT_ALIASES,
    TIMESTAMP,
    WAYMO_CLASSES,
    WAYMO_TYPES,
    numeric_column,
    open_parquet,
    read_columns,
    read_index,
    require_columns,
    row_groups_of,
    segment_index,
    turn_velocities,
    write_box_predictions,
)


def _rotation_from_euler(rpy: np.ndarray) -> np.ndarray:
    """[..., 3, 3] from (roll, pitch, yaw) [..., 3], R = Rz(yaw) Ry(pitch) Rx(roll) (Waymo's convention)."""
    r, p, y = rpy[..., 0], rpy[..., 1], rpy[..., 2]
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    return np.stack([np.stack([cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr], -1),
                     np.stack([sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr], -1),
                     np.stack([-sp, cp * sr, cp * cr], -1)], -2)


class WaymoDataset(PointCloudDataset):
    """Frames of Waymo v2 segments as detection samples (gt_boxes [M, 9] with velocity).

    root: the folder holding training/, validation/, testing/. split: one of those. class_names:
    training classes among Vehicle, Pedestrian, Sign, Cyclist. returns: which range-image returns
    to use. drop_no_label_zone: drop points in no-label zones. min_box_points: boxes with fewer
    LiDAR points are not training boxes (they stay in metadata["annos"]). index: a create_data index
    JSON (default <root>/waymo_infos_<split>.json when present, else built from the key columns).
    labels: whether each segment must have its lidar_box file (None: yes, except for testing, whose
    boxes are read when present; False: boxes are never read, e.g. for inference).
    n_past_scans: past sweeps merged into each frame (see the module docstring); scan_period: seconds between
    sweeps for their time column (Waymo's LiDAR turns at 10 Hz); time_channel: add the time column (default:
    when n_past_scans > 0).
    """

    feature_names: tuple[str, ...] = ("intensity", "elongation")  # and "time" with a time channel
    lasers: tuple[int, ...] | None = None  # the lasers a sample's points come from (None: every laser)

    def __init__(self, root: str | PathLike, split: str = "training", class_names=WAYMO_CLASSES,
                 returns=(1, 2), drop_no_label_zone: bool = True, min_box_points: int = 1, index=None,
                 labels: bool | None = None, n_past_scans: int = 0, scan_period: float = 0.1,
                 time_channel: bool | None = None, transforms=None, augmentations=None, voxelizer=None,
                 point_cloud_range=None, voxel_size=None,
                 seed: int | None = None, skip_bad_frames: bool = False, training: bool | None = None):
        super().__init__(transforms, augmentations, voxelizer, point_cloud_range, voxel_size, seed, skip_bad_frames,
                         training)
        self.root, self.split = Path(root), SPLIT_ALIASES.get(split, split)
        split = self.split
        self.class_names = list(class_names)
        unknown = [n for n in self.class_names if n not in WAYMO_TYPES.values()]
        if unknown:
            raise ConfigError(f"class_names {unknown} are not Waymo types ({', '.join(WAYMO_TYPES.values())})")
        self.returns = tuple(int(r) for r in returns)
        self.drop_no_label_zone = drop_no_label_zone
        self.min_box_points = int(min_box_points)
        self.labels = split != "testing" if labels is None else bool(labels)
        self.read_labels = labels is not False
        index_path = Path(index) if index else self.root / f"waymo_infos_{split}.json"
        segments = read_index(index_path) if index_path.is_file() else segment_index(self.root, split)
        # (segment, timestamp, row group: an int, or a tuple where the frame's lasers span groups)
        self.frames = [(s["segment"], t, row_groups_of(g)) for s in segments
                       for t, g in zip(s["timestamps"], s["row_groups"], strict=True)]
        if isinstance(n_past_scans, bool) or not isinstance(n_past_scans, int) or n_past_scans < 0:
            raise ConfigError(f"n_past_scans must be an int >= 0, got {n_past_scans!r}")
        if isinstance(scan_period, bool) or not isinstance(scan_period, int | float) or not scan_period > 0:
            raise ConfigError(f"scan_period must be a number > 0, got {scan_period!r}")
        self.n_past_scans, self.scan_period = n_past_scans, float(scan_period)
        self.time_channel = n_past_scans > 0 if time_channel is None else bool(time_channel)
        if self.time_channel:
            self.feature_names = (*WaymoDataset.feature_names, "time")
        self._segment: str | None = None
        self._cache: dict = {}

    def frame_id(self, index: int) -> str:
        segment, ts, _ = self.frames[index]
        return f"{segment}/{ts}"

    def component(self, name: str, segment: str) -> Path:
        return self.root / self.split / name / f"{segment}.parquet"

    def _segment_tables(self, segment: str) -> dict:
        """Calibration per laser and the segment's box table, read once; the row-group cache is reset.
        Built whole before it is cached: after a bad file every frame of the segment raises the same error."""
        if self._segment == segment:
            return self._cache
        tables = {"calib": self._read_calibration(segment), "boxes": self._read_box_table(segment)}
        pose_path = self.component("lidar_pose", segment)
        tables["lidar_pose"] = pose_path if pose_path.is_file() else None
        self._segment, self._cache = segment, tables
        return tables

    def _read_calibration(self, segment: str) -> dict:
        """{laser: (extrinsic [4, 4], beam inclination values or None, min, max)} of lidar_calibration."""
        path = self.component("lidar_calibration", segment)
        parquet = open_parquet(path)
        cols = [LASER, f"{CALIB}.extrinsic.transform", f"{CALIB}.beam_inclination.min",
                f"{CALIB}.beam_inclination.max"]
        require_columns(path, parquet, cols)
        values_col = f"{CALIB}.beam_inclination.values"
        has_values = values_col in parquet.schema_arrow.names
        table = read_columns(path, parquet, cols + ([values_col] if has_values else []))
        lasers = numeric_column(path, table, LASER).astype(np.int64)
        lo, hi = numeric_column(path, table, cols[2]), numeric_column(path, table, cols[3])
        rows = table.to_pydict()
        calib = {}
        for k, laser in enumerate(lasers.tolist()):
            if laser in calib:
                raise DataFormatError(path, f"laser {laser} is calibrated twice")
            try:
                extrinsic = np.asarray(rows[cols[1]][k], np.float64)
                values = None if not has_values or rows[values_col][k] is None else np.asarray(rows[values_col][k],
                                                                                                np.float64)
            except (TypeError, ValueError):
                raise DataFormatError(path, f"laser {laser}: non-numeric extrinsic or beam inclinations") from None
            if extrinsic.shape != (16,) or not np.isfinite(extrinsic).all():
                raise DataFormatError(path, f"laser {laser}: extrinsic must have 16 finite values, got "
                                            f"{extrinsic.shape}")
            if values is not None and not np.isfinite(values).all():
                raise DataFormatError(path, f"laser {laser}: NaN or infinite beam inclinations")
            calib[laser] = (extrinsic.reshape(4, 4), values, float(lo[k]), float(hi[k]))
        return calib

    def _read_box_table(self, segment: str):
        """The segment's lidar_box table, or None where labels are not needed (see ``labels``)."""
        path = self.component("lidar_box", segment)
        if not self.read_labels or (not self.labels and not path.is_file()):
            return None
        if not path.is_file():
            raise DataFormatError(path, f"missing: every {self.split} segment needs its boxes (pass labels=False "
                                        "to read points only)")
        parquet = open_parquet(path)
        require_columns(path, parquet, BOX_COLUMNS)
        extra = [c for c in OPTIONAL_BOX_COLUMNS if c in parquet.schema_arrow.names]
        return read_columns(path, parquet, BOX_COLUMNS + extra)

    def _row_group(self, segment: str, group: int | tuple[int, ...]):
        """The segment's lidar row group `group` (the groups of a tuple, concatenated); the last n_past_scans + 1
        read are cached (a frame's sweeps may span two row groups)."""
        key = ("lidar", group)
        if key not in self._cache:
            cached = [k for k in self._cache if isinstance(k, tuple) and k[0] == "lidar"]
            if len(cached) > self.n_past_scans:
                self._cache.pop(cached[0])
            path = self.component("lidar", segment)
            parquet = open_parquet(path)
            cols = [TIMESTAMP, LASER] + [f"{LIDAR}.range_image_return{r}.{f}" for r in self.returns
                                         for f in ("values", "shape")]
            require_columns(path, parquet, cols)
            if isinstance(group, tuple):
                import pyarrow as pa

                self._cache[key] = pa.concat_tables([read_columns(path, parquet, cols, g) for g in group])
            else:
                self._cache[key] = read_columns(path, parquet, cols, group)
        return self._cache[key]

    def range_image_shape(self, segment: str, timestamp: int, group: int, laser: int, ret: int) -> tuple[int, int]:
        """(H, W) of a laser's range image `ret` at timestamp (the grid its points' pixels index)."""
        table = self._row_group(segment, group)
        path = self.component("lidar", segment)
        rows = np.flatnonzero((numeric_column(path, table, TIMESTAMP) == timestamp)
                              & (numeric_column(path, table, LASER).astype(np.int64) == laser))
        if len(rows) != 1:
            raise DataFormatError(path, f"frame {timestamp}: {len(rows)} rows of laser {laser} (expected 1)")
        shape = table.column(f"{LIDAR}.range_image_return{ret}.shape")[int(rows[0])].as_py()
        return int(shape[0]), int(shape[1])

    def read_points(self, segment: str, timestamp: int, group: int) -> np.ndarray:
        """float32 [N, 5 (+1)] vehicle-frame points of every laser and return of one frame."""
        clouds = [cloud for _, _, cloud, _ in self.read_returns(segment, timestamp, group)]
        return np.concatenate(clouds) if clouds else np.zeros((0, 5), np.float32)

    def read_returns(self, segment: str, timestamp: int, group: int):
        """(laser, return, points float32 [K, 6], pixels int64 [K, 2] (row, col)) of each laser and return of one
        frame: vehicle-frame x, y, z, intensity, elongation, no-label zone, in row-major pixel order."""
        tables = self._segment_tables(segment)
        table = self._row_group(segment, group)
        path = self.component("lidar", segment)
        rows = np.flatnonzero(numeric_column(path, table, TIMESTAMP) == timestamp)
        if not len(rows):
            raise DataFormatError(path, f"no lidar rows for timestamp {timestamp} in row group {group}")
        lasers = numeric_column(path, table, LASER, rows, f"frame {timestamp}: ").astype(np.int64)
        if len(set(lasers.tolist())) < len(lasers):
            raise DataFormatError(path, f"frame {timestamp}: a laser has more than one row")
        for row, laser in zip(rows.tolist(), lasers.tolist(), strict=True):
            if laser not in tables["calib"]:
                raise DataFormatError(self.component("lidar_calibration", segment), f"no calibration of laser {laser}")
            extrinsic, values, lo, hi = tables["calib"][laser]
            for r in self.returns:
                where = f"frame {timestamp} laser {laser} return {r}"
                image = self._range_image(path, table, row, r, where)
                if image is None:  # v2 leaves a return absent (null) where a laser recorded none
                    self.note("absent (null) range images", path)
                    continue
                try:
                    incl = beam_inclinations(image.shape[0], values, lo, hi)
                    xyz, pixels = range_image_to_points(image, incl, extrinsic)
                except (ConfigError, DataFormatError) as error:
                    raise DataFormatError(self.component("lidar_calibration", segment),
                                          f"laser {laser} does not fit the {where} range image: {error}") from None
                if laser == 1 and tables["lidar_pose"] is not None:
                    xyz = self._rolling_shutter(segment, timestamp, r, xyz, image, pixels, incl, extrinsic)
                feats = image[pixels[:, 0], pixels[:, 1]]
                yield laser, r, np.concatenate([xyz, feats[:, 1:3], feats[:, 3:4]], 1).astype(np.float32), pixels

    @staticmethod
    def _range_image(path: Path, table, row: int, ret: int, where: str) -> np.ndarray | None:
        """float32 [H, W, C >= 4] range image `ret` of lidar row `row`, None where the file leaves the return
        absent (values and shape both null); DataFormatError on one of them null, null values, NaN, bad shapes."""
        shape = table.column(f"{LIDAR}.range_image_return{ret}.shape")[row]
        values = table.column(f"{LIDAR}.range_image_return{ret}.values")[row]
        if not shape.is_valid and not values.is_valid:
            return None
        shape, values = shape.as_py(), values.values
        if values is None or values.null_count:
            raise DataFormatError(path, f"{where}: null range image values")
        flat = values.to_numpy(zero_copy_only=False)
        try:
            shape = [int(v) for v in shape]
        except (TypeError, ValueError):
            shape = None
        if shape is None or flat.dtype.kind not in "iuf":
            raise DataFormatError(path, f"{where}: range image values ({flat.dtype}) or shape are not numbers")
        if len(shape) != 3 or min(shape) < 1 or shape[2] < 4 or int(np.prod(shape)) != len(flat):
            raise DataFormatError(path, f"{where}: range image of {len(flat)} values does not match shape {shape}")
        image = flat.reshape(shape)
        if not np.isfinite(image).all():
            raise DataFormatError(path, f"{where}: NaN in range image")
        return image

    def _rolling_shutter(self, segment, timestamp, ret, xyz, image, pixels, incl, extrinsic) -> np.ndarray:
        """Per-pixel vehicle poses (lidar_pose component) move each TOP point to the frame's vehicle pose.
        The v2 component stores one pose image (``range_image_return1``), used for both returns."""
        path = self.component("lidar_pose", segment)
        values = self._pose_values(segment, timestamp)
        size = int(np.prod(image.shape[:2])) * 6
        if values is None or values.null_count or len(values) != size:
            raise DataFormatError(path, f"frame {timestamp}: expected {size} pose values (H x W x 6), got "
                                        f"{0 if values is None else len(values)}")
        pixel_pose = np.asarray(values.to_numpy(zero_copy_only=False), np.float64).reshape(*image.shape[:2], 6)
        if not np.isfinite(pixel_pose).all():
            raise DataFormatError(path, f"frame {timestamp}: NaN or infinite pixel poses")
        frame_pose = self.vehicle_pose(segment, timestamp)
        p = pixel_pose[pixels[:, 0], pixels[:, 1]]
        rot = _rotation_from_euler(p[:, :3])
        world = np.einsum("nij,nj->ni", rot, xyz.astype(np.float64)) + p[:, 3:]
        try:
            inv = np.linalg.inv(frame_pose)
        except np.linalg.LinAlgError:
            raise DataFormatError(self.component("vehicle_pose", segment),
                                  f"frame {timestamp}: singular world_from_vehicle pose") from None
        return (world @ inv[:3, :3].T + inv[:3, 3]).astype(np.float32)

    def _pose_values(self, segment: str, timestamp: int):
        """The TOP laser's pixel-pose values at timestamp (an arrow array): the lidar_pose file's keys are read
        once per segment, then only the row group holding the frame (the last one read is cached)."""
        path = self.component("lidar_pose", segment)
        tables = self._segment_tables(segment)
        col = "[LiDARPoseComponent].range_image_return1.values"
        if "pose_rows" not in tables:
            parquet = open_parquet(path)
            require_columns(path, parquet, [TIMESTAMP, LASER, col])
            rows = {}
            for g in range(parquet.num_row_groups):
                keys = read_columns(path, parquet, [TIMESTAMP, LASER], g)
                top = np.flatnonzero(numeric_column(path, keys, LASER) == 1)
                stamps = numeric_column(path, keys, TIMESTAMP).astype(np.int64)[top]
                rows.update({int(t): (g, int(r)) for t, r in zip(stamps.tolist(), top.tolist(), strict=True)})
            tables["pose_rows"], tables["pose_group"] = rows, (None, None)
        if int(timestamp) not in tables["pose_rows"]:
            raise DataFormatError(path, f"frame {timestamp}: no TOP laser pose row")
        group, row = tables["pose_rows"][int(timestamp)]
        if tables["pose_group"][0] != group:
            tables["pose_group"] = (group, read_columns(path, open_parquet(path), [col], group))
        return tables["pose_group"][1].column(col)[row].values

    def vehicle_poses(self, segment: str) -> dict[int, np.ndarray]:
        """{timestamp: world_from_vehicle float64 [4, 4]} of the segment's vehicle_pose component, read once."""
        tables = self._segment_tables(segment)
        if "vehicle_poses" not in tables:
            path = self.component("vehicle_pose", segment)
            transform = "[VehiclePoseComponent].world_from_vehicle.transform"
            parquet = open_parquet(path)
            require_columns(path, parquet, [TIMESTAMP, transform])
            table = read_columns(path, parquet, [TIMESTAMP, transform])
            poses = {}
            for ts, values in zip(numeric_column(path, table, TIMESTAMP).astype(np.int64).tolist(),
                                  table.column(1).to_pylist(), strict=True):
                pose = np.asarray(values or [], np.float64)
                if pose.shape != (16,) or not np.isfinite(pose).all():
                    raise DataFormatError(path, f"frame {ts}: no finite 4 x 4 world_from_vehicle pose")
                poses[ts] = pose.reshape(4, 4)
            tables["vehicle_poses"] = poses
        return tables["vehicle_poses"]

    def poses_of(self, per_segment: dict[str, list]) -> dict[str, dict[int, np.ndarray] | None]:
        """{segment: {timestamp: world_from_vehicle}} of the segments whose predictions [(timestamp, pred)] carry
        velocities (the writers turn them into Waymo's world axes), None for the others (no vehicle_pose read)."""
        out = {}
        for segment, frames in per_segment.items():
            moving = any(np.shape(pred["boxes"])[-1] >= 9 for _, pred in frames if len(pred["scores"]))
            out[segment] = self.vehicle_poses(segment) if moving else None
        return out

    def vehicle_pose(self, segment: str, timestamp: int) -> np.ndarray:
        """world_from_vehicle float64 [4, 4] of one frame; DataFormatError naming the file when it has none."""
        pose = self.vehicle_poses(segment).get(int(timestamp))
        if pose is None:
            raise DataFormatError(self.component("vehicle_pose", segment), f"no pose of frame {timestamp}")
        return pose

    def past_frames(self, index: int) -> list[tuple[int, int]]:
        """(timestamp, row group) of the n_past_scans frames before frame `index` in its segment, newest first."""
        segment = self.frames[index][0]
        out = []
        for past in range(index - 1, max(index - self.n_past_scans, 0) - 1, -1):
            if self.frames[past][0] != segment:
                break
            out.append(self.frames[past][1:])
        return out

    def read_boxes(self, segment: str, timestamp: int) -> dict[str, np.ndarray]:
        """The frame's boxes: box float32 [M, 9] (x, y, z, l, w, h, heading, vx, vy, all in the vehicle frame: the
        file's world-axis speeds turned by the frame's vehicle pose; NaN where the file has no speed or the segment
        no vehicle_pose file, which the dataset's notes then count), name,
        difficulty int8 (0 UNKNOWN where the file leaves it empty, 1 LEVEL_1, 2 LEVEL_2), num_points int64; and
        where the file has the columns, tracking_difficulty int8 and id (``key.laser_object_id``, the object's
        track id, str)."""
        boxes = self._segment_tables(segment).get("boxes")
        if boxes is None:
            return {"box": np.zeros((0, 9), np.float32), "name": np.zeros(0, str),
                    "difficulty": np.zeros(0, np.int8), "num_points": np.zeros(0, np.int64)}
        path = self.component("lidar_box", segment)
        rows = np.flatnonzero(numeric_column(path, boxes, TIMESTAMP) == timestamp)
        where = f"frame {timestamp}: "

        def col(name: str) -> np.ndarray:
            full = f"{BOX}.{name}"
            # v2's optional fields (a missing column or an empty entry): an unknown speed is NaN, not standing
            # still; an unknown difficulty 0 (UNKNOWN: the metrics level it by its points)
            empty = np.nan if name.startswith("speed") else 0.0 if name.startswith("difficulty") else None
            if full not in boxes.schema.names and empty is not None:
                return np.full(len(rows), empty)
            return numeric_column(path, boxes, full, rows, where, null=empty)

        box = np.stack([col(c) for c in ("box.center.x", "box.center.y", "box.center.z", "box.size.x",
                                          "box.size.y", "box.size.z", "box.heading", "speed.x", "speed.y")], 1)
        if np.isfinite(box[:, 7:9]).any():
            if self.component("vehicle_pose", segment).is_file():
                vz = np.nan_to_num(col("speed.z")) if f"{BOX}.speed.z" in boxes.schema.names else None
                box = turn_velocities(box, self.vehicle_pose(segment, timestamp)[:3, :3].T, vz)
            else:  # world-axis speeds without the pose that turns them: unknown, and said so once
                box[:, 7:9] = np.nan
                self.note("speeds unknown without a vehicle_pose file", self.component("vehicle_pose", segment))
        if (box[:, 3:6] < 0).any():
            k = int(np.flatnonzero((box[:, 3:6] < 0).any(1))[0])
            raise DataFormatError(path, f"{where}negative box size (l, w, h) = {tuple(box[k, 3:6].tolist())}")
        box[:, 6] = (box[:, 6] + np.pi) % (2 * np.pi) - np.pi
        types = col("type").astype(np.int64)
        unknown = sorted(set(types.tolist()) - set(WAYMO_TYPES))
        if unknown:
            raise DataFormatError(path, f"{where}unknown box types {unknown[:5]} (Waymo types: {WAYMO_TYPES})")
        out = {"box": box.astype(np.float32), "name": np.asarray([WAYMO_TYPES[t] for t in types.tolist()],
                                                                  dtype=str).reshape(-1),
               "difficulty": col("difficulty_level.detection").astype(np.int8),
               "num_points": col("num_lidar_points_in_box").astype(np.int64)}
        if f"{BOX}.difficulty_level.tracking" in boxes.schema.names:
            out["tracking_difficulty"] = col("difficulty_level.tracking").astype(np.int8)
        if OBJECT_ID in boxes.schema.names:
            ids = boxes.column(OBJECT_ID).take(rows)
            if ids.null_count:
                raise DataFormatError(path, f"{where}{ids.null_count} null values in {OBJECT_ID}")
            out["id"] = np.asarray(ids.to_pylist(), dtype=str).reshape(-1)
        return out

    def annotations(self, index: int) -> dict:
        """The frame's evaluation ground truth without reading its range images: ``{"annos": read_boxes(...)}``."""
        segment, timestamp, _ = self.frames[index]
        return {"annos": self.read_boxes(segment, timestamp)}

    def write_predictions(self, predictions: list[dict], out_dir) -> Path:
        """`tools/test.py` hook: ``<out_dir>/<split>/lidar_box/<segment>.parquet`` per segment, the v2 box
        component's columns plus ``[LiDARBoxComponent].score`` (boxes in the vehicle frame), and all of them in
        ``<out_dir>/<split>/objects.bin``, Waymo's Objects protobuf (pc3d.eval.waymo_objects: what the official
        evaluators, tools/eval_waymo.py and the leaderboard's create_submission read)."""
        from pc3d.eval.waymo_objects import prediction_frames, write_objects

        if len(predictions) != len(self.frames):
            raise DataFormatError(self.root, f"{len(predictions)} predictions for {len(self.frames)} frames")
        per_segment: dict[str, list] = {}
        for (segment, timestamp, _), pred in zip(self.frames, predictions, strict=True):
            per_segment.setdefault(segment, []).append((timestamp, pred))
        out = Path(out_dir) / self.split / "lidar_box"
        poses = self.poses_of(per_segment)
        for segment, frames in per_segment.items():
            write_box_predictions(out / f"{segment}.parquet", segment, frames, self.class_names, poses[segment])
        write_objects(out.parent / "objects.bin", prediction_frames(per_segment, self.class_names, poses))
        return out

    def ground_truth_objects(self):
        """Each frame's boxes as pc3d.eval.waymo_objects.write_objects takes them: every type, with ids, points and
        both difficulty levels where the lidar_box file has them (speeds, in world axes, where every box has one);
        the values read_boxes gives pc3d's own evaluation (float32)."""
        for segment, timestamp, _ in self.frames:
            annos = self.read_boxes(segment, timestamp)
            boxes = annos["box"].astype(np.float64)
            if np.isfinite(boxes).all():  # speeds back in world axes, as Waymo's own ground truth files hold them
                boxes = turn_velocities(boxes, self.vehicle_pose(segment, timestamp)[:3, :3])
            yield {"context_name": segment, "timestamp": timestamp,
                   "boxes": boxes if np.isfinite(boxes).all() else boxes[:, :7], "types": annos["name"],
                   "num_points": annos["num_points"], "difficulty": annos["difficulty"],
                   "tracking_difficulty": annos.get("tracking_difficulty"), "ids": annos.get("id")}

    def sweep(self, segment: str, timestamp: int, group: int) -> tuple[np.ndarray, int]:
        """(float32 [N, 5] x, y, z, intensity, elongation of one frame, the number of no-label-zone points in it),
        those points dropped when drop_no_label_zone."""
        points = self.read_points(segment, timestamp, group)
        nlz = points[:, 5] > 0
        return np.ascontiguousarray(points[~nlz, :5] if self.drop_no_label_zone else points[:, :5]), int(nlz.sum())

    def load(self, index: int) -> dict:
        from pc3d.data.semantickitti import relative_pose, transform_points

        segment, timestamp, group = self.frames[index]
        points, nlz = self.sweep(segment, timestamp, group)
        clouds, times = [points], [np.zeros(len(points), np.float32)]
        if self.n_past_scans:  # merged with or without a time column, as SemanticKITTI's past scans
            pose = self.vehicle_pose(segment, timestamp)
            for k, (past, past_group) in enumerate(self.past_frames(index), 1):
                sweep = self.sweep(segment, past, past_group)[0]
                clouds.append(transform_points(sweep, relative_pose(pose, self.vehicle_pose(segment, past))))
                times.append(np.full(len(sweep), -k * self.scan_period, np.float32))
            points = np.concatenate(clouds)
        if self.time_channel:
            points = np.concatenate([points, np.concatenate(times)[:, None]], 1)
        annos = self.read_boxes(segment, timestamp)
        train = np.isin(annos["name"], self.class_names) & (annos["num_points"] >= self.min_box_points)
        return {"frame_id": f"{segment}/{timestamp}", "points": points,
                "gt_boxes": annos["box"][train], "other_boxes": annos["box"][~train],
                "gt_labels": np.asarray([self.class_names.index(n) + 1 for n in annos["name"][train]], np.int64),
                "metadata": {"annos": annos, "segment": segment, "timestamp": timestamp,
                             "num_no_label_zone_points": nlz,
                             "source": str(self.component("lidar", segment))}}
