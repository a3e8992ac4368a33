"""Waymo Open Dataset v2 3D semantic segmentation (no TensorFlow): the TOP LiDAR's points with the labels of
the ``lidar_segmentation`` component.

    {training,validation}/lidar_segmentation/<segment>.parquet
        [LiDARSegmentationLabelComponent].range_image_return{1,2}.values / .shape   int32 [H, W, 2]

Each labelled pixel holds (instance id, semantic class); a point takes the label of the range-image pixel it
came from (``range_image_labels``), so the labels follow the points of each return exactly. Only frames with
a segmentation row are samples (the real dataset labels about every fifth frame). Only the TOP laser is
labelled: by default only its points are read; ``lasers`` adds others' points (Pointcept reads all five),
every one of them undefined, and a submission (``range_image_frames``) holds the TOP laser's. The testing
split has no labels: ``frames_file`` (Waymo's ``3d_semseg_test_set_frames.txt``, one ``context_name,timestamp``
per line) names the frames to predict, and a frame without labels has every point undefined. Classes:
Segmentation.Type 0..22 (``WAYMO_SEG_CLASSES``); 0 (undefined) is ``ignore_index``, so mIoU runs over the 22
defined classes. Points in no-label zones are dropped with their labels (drop_no_label_zone) or kept as
undefined.
"""
from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np

from pc3d.errors import ConfigError, DataFormatError

from .io import read_label
from .label_space import LabelSpace, checked_ids
from .waymo import WaymoDataset
from .waymo_parquet import LASER, TIMESTAMP, numeric_column, open_parquet, read_columns, require_columns

SEG = "[LiDARSegmentationLabelComponent]"
TOP = 1
WAYMO_SEG_CLASSES = (
    "undefined", "car", "truck", "bus", "other_vehicle", "motorcyclist", "bicyclist", "pedestrian", "sign",
    "traffic_light", "pole", "construction_cone", "bicycle", "motorcycle", "building", "vegetation", "tree_trunk",
    "curb", "road", "lane_marker", "other_ground", "walkable", "sidewalk",
)


def write_label_file(path: Path, semantic: np.ndarray) -> Path:
    """The per-point prediction file: uint32 little-endian, one Segmentation.Type per point (SemanticKITTI's
    .label layout: class in the lower 16 bits, instance 0)."""
    semantic = np.asarray(semantic, np.int64)
    if semantic.size and (semantic.min() < 0 or semantic.max() >= len(WAYMO_SEG_CLASSES)):
        raise DataFormatError(path, f"classes must be in [0, {len(WAYMO_SEG_CLASSES)}), got "
                                    f"[{semantic.min()}, {semantic.max()}]")
    path.parent.mkdir(parents=True, exist_ok=True)
    semantic.astype("<u4").tofile(path)
    return path


def checked_lasers(lasers: Sequence[int]) -> tuple[int, ...]:
    """The laser names of a segmentation sample: distinct ints 1..5 (TOP, FRONT, SIDE_LEFT, SIDE_RIGHT, REAR)
    holding TOP, the one labelled; ConfigError otherwise."""
    try:
        names = [int(laser) for laser in lasers]
    except (TypeError, ValueError):
        names = []
    if not names or len(set(names)) < len(names) or not set(names) <= {1, 2, 3, 4, 5} or TOP not in names:
        raise ConfigError(f"lasers must be distinct laser names 1..5 including TOP (1), the labelled one; got "
                          f"{lasers!r}")
    return tuple(sorted(names))


def range_image_labels(labels: np.ndarray, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(semantic int64 [K], instance int64 [K]) of points at pixels [K, 2] (row, col) of a label image
    [H, W, 2] (instance id, semantic class)."""
    picked = labels[pixels[:, 0], pixels[:, 1]].astype(np.int64)
    return picked[:, 1], picked[:, 0]


class WaymoSegmentationDataset(WaymoDataset):
    """Samples {frame_id, points [N, 5] (x, y, z, intensity, elongation; vehicle frame), point_labels [N]
    (0..22), instance_ids [N]} of the frames that have segmentation labels.

    root / split / returns / drop_no_label_zone / index and the common dataset arguments as WaymoDataset.
    frames_file: the frames to read (``context_name,timestamp`` lines; the test set's, which has no labels)
    instead of the labelled ones; each must be a frame of the split. lasers: laser names (1 TOP .. 5 REAR) whose
    points a sample holds, in the file's laser order; TOP (the labelled one) must be among them, the others'
    points are undefined (0)."""

    class_names = list(WAYMO_SEG_CLASSES)
    ignore_index = 0
    lasers = (TOP,)  # the default: only the TOP laser is labelled; tools/infer.py feeds a model the lasers its
    # dataset config names (this default without one)

    @classmethod
    def label_space(cls, **_) -> LabelSpace:
        """Segmentation.Type ids written as ``<out_dir>/<segment>/<timestamp>.label`` (write_label_file)."""

        def write(frame_id: str, ids: np.ndarray, out_dir: Path) -> Path:
            return write_label_file(Path(out_dir) / f"{frame_id}.label", ids)

        def read(path: Path, count: int) -> np.ndarray:
            return checked_ids(path, read_label(path, count) & 0xFFFF, count, len(WAYMO_SEG_CLASSES))

        return LabelSpace(list(WAYMO_SEG_CLASSES), write, read)

    def write_predictions(self, predictions: list[dict], out_dir) -> Path:
        """`tools/test.py` hook: ``<out_dir>/<segment>/<timestamp>.label`` per labelled frame, one class per point
        of the sample (in the loader's order), and all frames in
        ``<out_dir>/segmentation.bin``, Waymo's SegmentationFrameList (pc3d.eval.waymo_segmentation: what
        compute_segmentation_metrics_main, tools/eval_waymo.py --segmentation and a submission take)."""
        from pc3d.eval.waymo_segmentation import write_segmentation_frames

        if len(predictions) != len(self.frames):
            raise DataFormatError(self.root, f"{len(predictions)} predictions for {len(self.frames)} frames")
        space = self.label_space()
        for index, pred in enumerate(predictions):
            space.write(self.frame_id(index), np.asarray(pred["pred_labels"]), Path(out_dir))
        write_segmentation_frames(Path(out_dir) / "segmentation.bin",
                                  self.range_image_frames([p["pred_labels"] for p in predictions]))
        return Path(out_dir)

    def __init__(self, root: str | PathLike, split: str = "training", returns=(1, 2), drop_no_label_zone: bool = True,
                 index=None, transforms=None, augmentations=None, voxelizer=None, point_cloud_range=None,
                 voxel_size=None, seed: int | None = None, skip_bad_frames: bool = False,
                 training: bool | None = None, frames_file: str | PathLike | None = None,
                 lasers: Sequence[int] = (TOP,)):
        super().__init__(root, split, returns=returns, drop_no_label_zone=drop_no_label_zone, index=index,
                         labels=False, transforms=transforms, augmentations=augmentations, voxelizer=voxelizer,
                         point_cloud_range=point_cloud_range, voxel_size=voxel_size, seed=seed,
                         skip_bad_frames=skip_bad_frames, training=training)
        self.class_names = list(WAYMO_SEG_CLASSES)
        self.lasers = checked_lasers(lasers)
        self._label_rows: dict[str, dict[int, tuple[int, int]]] = {}  # segment -> {timestamp: (row group, row)}
        labelled = {segment: self._labelled_timestamps(segment) for segment in {f[0] for f in self.frames}}
        if frames_file is not None:
            self.frames = self._listed_frames(Path(frames_file))
        else:
            self.frames = [f for f in self.frames if f[1] in labelled[f[0]]]
        if not self.frames:
            raise DataFormatError(self.root / self.split / "lidar_segmentation",
                                  "no frame has segmentation labels of the TOP laser")

    def _listed_frames(self, path: Path) -> list[tuple]:
        """The split's frames named by a ``context_name,timestamp`` file, in the file's order."""
        try:
            rows = [line.strip().split(",") for line in path.read_text().splitlines() if line.strip()]
            wanted = [(name.strip(), int(stamp)) for name, stamp in rows]
        except (OSError, ValueError) as error:
            raise DataFormatError(path, f"expected 'context_name,timestamp' lines ({error})") from None
        by_key = {(f[0], f[1]): f for f in self.frames}
        missing = [key for key in wanted if key not in by_key]
        if missing:
            raise DataFormatError(path, f"{len(missing)} listed frames are not in {self.root / self.split} "
                                        f"(the first: {missing[0][0]} {missing[0][1]})")
        return [by_key[key] for key in wanted]

    def _labelled_timestamps(self, segment: str) -> set[int]:
        """The TOP laser's labelled timestamps of a segment, each row's place noted for read_label_images (the
        file's key columns only; a timestamp labelled twice is a DataFormatError)."""
        path = self.component("lidar_segmentation", segment)
        if not path.is_file():
            return set()
        parquet = open_parquet(path)
        require_columns(path, parquet, [TIMESTAMP, LASER])
        table = read_columns(path, parquet, [TIMESTAMP, LASER])
        lasers = numeric_column(path, table, LASER).astype(np.int64)
        stamps = numeric_column(path, table, TIMESTAMP).astype(np.int64)
        starts = np.cumsum([0] + [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)])
        rows: dict[int, tuple[int, int]] = {}
        for row in np.flatnonzero(lasers == TOP).tolist():
            if int(stamps[row]) in rows:
                raise DataFormatError(path, f"frame {int(stamps[row])}: 2 TOP label rows (expected 1)")
            group = int(np.searchsorted(starts, row, side="right") - 1)
            rows[int(stamps[row])] = (group, row - int(starts[group]))
        self._label_rows[segment] = rows
        return set(rows)

    def read_label_images(self, segment: str, timestamp: int) -> dict[int, np.ndarray]:
        """{return: int32 [H, W, 2]} of the TOP laser at timestamp (its row group alone is read); DataFormatError
        naming the file."""
        path = self.component("lidar_segmentation", segment)
        if segment not in self._label_rows:
            self._labelled_timestamps(segment)
        if timestamp not in self._label_rows[segment]:
            raise DataFormatError(path, f"frame {timestamp}: 0 TOP label rows (expected 1)")
        group, row = self._label_rows[segment][timestamp]
        parquet = open_parquet(path)
        cols = [f"{SEG}.range_image_return{r}.{f}" for r in self.returns for f in ("values", "shape")]
        require_columns(path, parquet, cols)
        table = read_columns(path, parquet, cols, group)
        images = {}
        for r in self.returns:
            shape = [int(v) for v in table.column(f"{SEG}.range_image_return{r}.shape")[row].as_py()]
            flat = table.column(f"{SEG}.range_image_return{r}.values")[row].values.to_numpy(
                zero_copy_only=False)
            if len(shape) != 3 or shape[2] != 2 or int(np.prod(shape)) != len(flat):
                raise DataFormatError(path, f"frame {timestamp} return {r}: {len(flat)} label values do not fit "
                                            f"shape {shape} (expected [H, W, 2])")
            images[r] = flat.reshape(shape)
        return images

    def sample_returns(self, segment: str, timestamp: int, group: int):
        """(laser, return, points float32 [K, 6] (as read_returns), pixels [K, 2], kept bool [K] (the points a sample
        holds: outside no-label zones when drop_no_label_zone), semantic [K], instance [K], the TOP range image's
        (H, W) (None for other lasers)) of each return of the sample's lasers, in load()'s order. TOP's labels come
        from its label image (0 for a frame without labels and in no-label zones), every other laser's are 0
        (undefined)."""
        labelled = timestamp in self._label_rows.get(segment, {})
        label_images = self.read_label_images(segment, timestamp) if labelled else {}
        for laser, ret, cloud, pixels in self.read_returns(segment, timestamp, group):
            if laser not in self.lasers:
                continue
            kept = cloud[:, 5] <= 0 if self.drop_no_label_zone else np.ones(len(cloud), bool)
            image = label_images.get(ret) if laser == TOP else None
            shape = image.shape[:2] if image is not None else (  # another laser's is never needed
                self.range_image_shape(segment, timestamp, group, laser, ret) if laser == TOP else None)
            if image is None:  # another laser, or a frame without labels (the test set's): every pixel undefined
                undefined = np.zeros(len(cloud), np.int64)
                yield laser, ret, cloud, pixels, kept, undefined, undefined, shape
                continue
            if (pixels.max(0, initial=0) >= shape).any():
                raise DataFormatError(self.component("lidar_segmentation", segment),
                                      f"frame {timestamp} return {ret}: label image {shape} is smaller "
                                      "than the range image")
            semantic, instance = range_image_labels(image, pixels)
            yield laser, ret, cloud, pixels, kept, np.where(cloud[:, 5] > 0, 0, semantic), instance, shape

    def load(self, index: int) -> dict:
        segment, timestamp, group = self.frames[index]
        clouds, semantic, instance = [], [], []
        for _, _, cloud, _, keep, sem, inst, _ in self.sample_returns(segment, timestamp, group):
            clouds.append(cloud[keep, :5])
            semantic.append(sem[keep])
            instance.append(inst[keep])
        if semantic and (np.concatenate(semantic) >= len(WAYMO_SEG_CLASSES)).any():
            raise DataFormatError(self.component("lidar_segmentation", segment),
                                  f"frame {timestamp}: semantic classes beyond {len(WAYMO_SEG_CLASSES) - 1}")
        return {"frame_id": f"{segment}/{timestamp}",
                "points": np.ascontiguousarray(np.concatenate(clouds)) if clouds else np.zeros((0, 5), np.float32),
                "point_labels": np.concatenate(semantic) if semantic else np.zeros(0, np.int64),
                "instance_ids": np.concatenate(instance) if instance else np.zeros(0, np.int64),
                "metadata": {"segment": segment, "timestamp": timestamp,
                             "source": str(self.component("lidar_segmentation", segment))}}

    def range_image_frames(self, labels: list[np.ndarray] | None = None):
        """pc3d.eval.waymo_segmentation.write_segmentation_frames' frames: each frame's per-point classes (labels[i]
        for frame i, in load()'s order: a model's predictions) or, without labels, its ground truth as load() reads
        it, put back on the pixels of the TOP laser's two returns (the other lasers' points are left out); every
        other pixel 0 (undefined)."""
        from pc3d.eval.waymo_segmentation import range_images

        if labels is not None and len(labels) != len(self.frames):
            raise DataFormatError(self.root, f"{len(labels)} predictions for {len(self.frames)} frames")
        for index, (segment, timestamp, group) in enumerate(self.frames):
            returns, truth, top = [], [], []
            for laser, ret, _, pixels, keep, sem, _, shape in self.sample_returns(segment, timestamp, group):
                truth.append(sem[keep])
                top.append(np.full(int(keep.sum()), laser == TOP))
                if laser == TOP:
                    returns.append((ret, pixels[keep], shape))
            given = np.concatenate(truth) if labels is None else np.asarray(labels[index])
            top = np.concatenate(top) if top else np.zeros(0, bool)
            if len(given) != len(top):
                raise DataFormatError(self.component("lidar", segment), f"frame {timestamp}: {len(given)} labels for "
                                                                        f"its {len(top)} points")
            yield {"context_name": segment, "timestamp": timestamp,
                   "returns": range_images(given[top], returns, f"{segment}/{timestamp}")}
