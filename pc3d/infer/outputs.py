"""Inference outputs, one writer per task (``model.task``): each writes the task's official format through
the dataset's own writer, a JSON summary per frame, and hands back what to render. Files are named by
frame id ("seq/name" frame ids make sub-folders).

    writer = OUTPUTS[task](out_dir, dataset_cfg, source)
    scene = writer.write(frame, prediction)      # a pc3d.viz.Scene to render
    print(writer.close())                        # where everything went

detection       KITTI ``label_2`` text with scores (camera frame through the frame's calibration, else the
                simulator's KITTI calibration) + LiDAR-frame JSON (pc3d.eval.box_json); a Waymo v2 source also gets
                ``waymo/<split>/lidar_box/<segment>.parquet`` (the v2 box component's columns + score).
segmentation    under ``labels/`` the dataset's label files (SemanticKITTI ``sequences/SS/predictions/NNNNNN.label``,
                ScanNet ``<scene>.txt``, otherwise ``<frame>.npy`` train ids; a one-file source's frame is
                ``<folder>/<stem>``, a sequence named after its folder), one label per row of the file
                read: rows dropped for NaN / inf get the dataset's ``ignore_index`` (-1 when it has none).
mos             the same label files with static / moving ids, one per point of the current scan.
flow            ``flow/<frame>.npy`` float32 [N, 3] per row of the file read: the motion of each point to the next
                frame of the sequence (NaN for rows dropped for NaN / inf and rows the model did not see: outside
                the scene-flow crop or not sampled); rendered as coloured arrows.
classification  the JSON summary (label, class name, scores).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pc3d.data.label_space import LabelSpace, npy_label_space
from pc3d.errors import DataFormatError
from pc3d.eval.box_json import write_box_json
from pc3d.infer.sources import Source, SourceFrame


def dataset_class(dataset_cfg: dict) -> type:
    from hydra.utils import get_class

    return get_class(dataset_cfg["_target_"])


def label_space(dataset_cfg: dict, num_classes: int) -> LabelSpace:
    """The dataset class's ``label_space(**config)`` when it has one, else train ids in .npy files."""
    make = getattr(dataset_class(dataset_cfg), "label_space", None)
    return make(**dataset_cfg) if callable(make) else npy_label_space(num_classes)


def _dump(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))


def box_class_names(dataset_cfg: dict) -> list[str]:
    """The names of box labels 1..K: the config's class_names, else the dataset class's box_class_names
    (ScanNet: 18 detection classes beside its 20 segmentation classes) or class_names."""
    if dataset_cfg.get("class_names"):
        return list(dataset_cfg["class_names"])
    cls = dataset_class(dataset_cfg)
    return list(getattr(cls, "box_class_names", None) or cls.class_names)


class DetectionOutput:
    """Outdoor sources: KITTI label_2 text (+ Waymo parquet) and JSON; an indoor scene (ScanNet): JSON of its
    axis-aligned boxes in the scene's aligned frame, the frame the benchmark's boxes are in."""

    def __init__(self, out: Path, dataset_cfg: dict, source: Source, num_classes: int):
        self.out, self.class_names = out, box_class_names(dataset_cfg)
        self.waymo: dict[str, list] = {} if source.kind == "waymo" else None
        self.dataset = getattr(source, "dataset", None)  # a WaymoDataset: the frames' poses for their velocities
        self.split = getattr(self.dataset, "split", "")
        self.indoor = source.kind == "scannet" or getattr(dataset_class(dataset_cfg), "indoor", False)

    def write(self, frame: SourceFrame, pred: dict):
        from pc3d.viz import Scene

        if not self.indoor:
            self.write_kitti(frame, pred)
        tracks = {} if pred.get("track_ids") is None else {"track_ids": np.asarray(pred["track_ids"]).tolist()}
        write_box_json(self.out / "json" / f"{frame.frame_id}.json", frame.frame_id,
                       "scene" if self.indoor else "lidar", pred, self.class_names, source=str(frame.source), **tracks)
        if self.waymo is not None:
            self.waymo.setdefault(frame.extra["segment"], []).append((frame.extra["timestamp"], pred))
        return Scene(frame.points, None, pred["boxes"], pred["scores"], pred["labels"], name=frame.frame_id,
                     view="overview" if self.indoor else "driving", track_ids=pred.get("track_ids"))

    def write_kitti(self, frame: SourceFrame, pred: dict) -> None:
        from pc3d.data.kitti import IMAGE_SHAPE
        from pc3d.eval.kitti_io import to_kitti_anno, write_kitti_label
        from pc3d.sim.ground_truth import kitti_calib

        calib = frame.calib or kitti_calib()
        shape = frame.extra.get("image_shape", IMAGE_SHAPE) if frame.calib is not None else None
        anno = to_kitti_anno(pred, calib, shape, self.class_names)
        path = self.out / "kitti" / f"{frame.frame_id}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_kitti_label(path, anno)

    def close(self) -> str:
        if self.indoor:
            return f"predictions: {self.out / 'json'} (axis-aligned boxes: centre, size, heading 0; scene frame)"
        lines = [f"predictions: {self.out / 'kitti'} (KITTI label_2 with scores), {self.out / 'json'} (LiDAR frame)"]
        if self.waymo:
            from pc3d.data.waymo_parquet import write_box_predictions
            from pc3d.eval.waymo_objects import prediction_frames, write_objects

            folder = self.out / "waymo" / self.split / "lidar_box"
            poses = self.dataset.poses_of(self.waymo)
            for segment, frames in self.waymo.items():
                write_box_predictions(folder / f"{segment}.parquet", segment, frames, self.class_names, poses[segment])
            objects = write_objects(folder.parent / "objects.bin",
                                    prediction_frames(self.waymo, self.class_names, poses))
            lines.append(f"Waymo v2 predictions: {folder} ({len(self.waymo)} segment parquet file(s)) and {objects} "
                         "(Waymo's Objects protobuf)")
        return "\n".join(lines)


class SegmentationOutput:
    key = "pred_labels"

    def __init__(self, out: Path, dataset_cfg: dict, source: Source, num_classes: int):
        from pc3d.viz.colors import generated_palette

        self.out, self.space = out, label_space(dataset_cfg, num_classes)
        self.ignore_index = int(getattr(dataset_class(dataset_cfg), "ignore_index", -1))
        self.palette = self.space.colors if self.space.colors is not None else generated_palette(len(self.space.names))
        indoor = source.kind == "scannet" or getattr(dataset_class(dataset_cfg), "indoor", False)
        self.view = "overview" if indoor else "driving"
        # frame ids that name no sequence (point files, a KITTI root's "000008") get their source's:
        # <folder>/<stem>, "kitti/000008" (SemanticKITTI's writer needs "SS/NNNNNN")
        self.sequence_ids = source.kind in ("file", "kitti")
        self.written = 0
        self.range_frames = None  # Waymo TOP-laser frames: their labels on the range images, segmentation.bin

    def labels(self, pred: dict) -> np.ndarray:
        return np.asarray(pred[self.key], np.int64)

    def write(self, frame: SourceFrame, pred: dict):
        from pc3d.viz import Scene

        labels = self.labels(pred)
        if len(labels) != len(frame.points):
            raise DataFormatError(frame.source, f"the model labelled {len(labels)} of {len(frame.points)} points")
        kept = frame.extra.get("kept")
        if kept is not None:  # one label per row of the file: rows dropped for NaN / inf are ignored ones
            rows = np.full(len(kept), self.ignore_index, np.int64)
            rows[kept] = labels
            labels = rows
        name = f"{frame.sequence}/{frame.frame_id}" if self.sequence_ids else frame.frame_id
        path = self.space.write(name, labels, self.out / "labels")
        ids, counts = np.unique(labels, return_counts=True)
        names = self.space.names
        _dump(self.out / "json" / f"{frame.frame_id}.json", {
            "frame_id": frame.frame_id, "source": str(frame.source), "labels": str(path.relative_to(self.out)),
            "points_per_class": {(names[i] if 0 <= i < len(names) else "unlabelled"): int(c)
                                 for i, c in zip(ids.tolist(), counts.tolist(), strict=True)}})
        self.written += 1
        labels = labels if kept is None else labels[kept]
        if frame.extra.get("range_pixels"):
            from pc3d.eval.waymo_segmentation import SegmentationFrameWriter

            if self.range_frames is None:
                self.range_frames = SegmentationFrameWriter(self.out / "segmentation.bin")
            self.range_frames.add(range_image_frame(frame, labels))
        return Scene(frame.points, point_labels=labels, palette=self.palette, name=frame.frame_id,
                     view=self.view)

    def close(self) -> str:
        text = (f"predictions: {self.written} label files under {self.out / 'labels'} (one label per point), "
                f"{self.out / 'json'} (points per class)")
        if self.range_frames is not None:
            path = self.range_frames.write()
            text += f", {path} (Waymo's SegmentationFrameList of {len(self.range_frames)} frames)"
        return text


def range_image_frame(frame: SourceFrame, labels: np.ndarray) -> dict:
    """write_segmentation_frames' frame of a Waymo frame's per-point labels (extra["range_pixels"]: each laser and
    return's pixels, in the points' order): the TOP laser's points (the one labelled), the other lasers' left out."""
    from pc3d.eval.waymo_segmentation import range_images

    lasers = {laser for laser, _ in frame.extra["range_pixels"]}
    if 1 not in lasers:
        raise DataFormatError(frame.source, f"lasers {sorted(lasers)}: a SegmentationFrameList holds the TOP laser (1)")
    returns, top, start = [], [], 0
    for (laser, ret), (pixels, shape) in frame.extra["range_pixels"].items():
        if laser == 1:
            returns.append((ret, pixels, shape))
            top.append(np.arange(start, start + len(pixels)))
        start += len(pixels)
    if start != len(labels):
        raise DataFormatError(frame.source, f"{len(labels)} labels for the {start} points of frame {frame.frame_id}")
    return {"context_name": frame.extra["segment"], "timestamp": frame.extra["timestamp"],
            "returns": range_images(np.asarray(labels)[np.concatenate(top)], returns, frame.frame_id)}


class MosOutput(SegmentationOutput):
    """Moving flags of the current scan as MOS train ids (1 static, 2 moving) through the dataset's label space,
    rendered in pc3d.viz.colors.MOS_PALETTE."""

    def __init__(self, out: Path, dataset_cfg: dict, source: Source, num_classes: int):
        from pc3d.viz.colors import MOS_PALETTE

        super().__init__(out, dataset_cfg, source, num_classes)
        self.palette = MOS_PALETTE

    def labels(self, pred: dict) -> np.ndarray:
        return np.asarray(pred["moving"], np.int64) + 1


class FlowOutput:
    def __init__(self, out: Path, dataset_cfg: dict, source: Source, num_classes: int):
        self.out, self.written = out, 0

    def write(self, frame: SourceFrame, pred: dict):
        from pc3d.viz import Scene

        path = self.out / "flow" / f"{frame.frame_id}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        flow = np.asarray(pred["flow"], np.float32)
        if "rows" in frame.extra:  # the model saw these rows of the frame (a scene-flow crop / sample)
            full = np.full((len(frame.points), 3), np.nan, np.float32)
            full[frame.extra["rows"]] = flow
            flow = full
        shown = flow
        kept = frame.extra.get("kept")
        if kept is not None:  # one row per row of the file: rows dropped for NaN / inf get NaN
            rows = np.full((len(kept), flow.shape[1]), np.nan, np.float32)
            rows[kept] = flow
            flow = rows
        np.save(path, flow)
        self.written += 1
        return Scene(frame.points, name=frame.frame_id, flow=shown)

    def close(self) -> str:
        return f"predictions: {self.written} flow files under {self.out / 'flow'} (float32 [N, 3])"


class ClassificationOutput:
    def __init__(self, out: Path, dataset_cfg: dict, source: Source, num_classes: int):
        self.out, self.names = out, list(dataset_cfg.get("class_names") or range(num_classes))

    def write(self, frame: SourceFrame, pred: dict):
        from pc3d.viz import Scene

        label = int(pred["label"])
        _dump(self.out / "json" / f"{frame.frame_id}.json", {
            "frame_id": frame.frame_id, "label": label, "name": str(self.names[label]),
            "scores": np.round(np.asarray(pred["scores"], np.float64), 4).tolist()})
        return Scene(frame.points, name=frame.frame_id, view="overview")

    def close(self) -> str:
        return f"predictions: {self.out / 'json'} (class and scores per file)"


OUTPUTS: dict[str, Any] = {"detection": DetectionOutput, "segmentation": SegmentationOutput, "mos": MosOutput,
                           "flow": FlowOutput, "classification": ClassificationOutput}
