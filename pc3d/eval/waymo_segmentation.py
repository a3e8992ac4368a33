"""Waymo's 3D semantic segmentation metric and its submission file, without TensorFlow.

The metric, as ``compute_segmentation_metrics_main`` configures waymo_open_dataset/metrics/segmentation_metrics.cc:
one confusion matrix over every pixel of both TOP returns of every labelled frame, whose classes are the 22 defined
Segmentation.Types plus one "other" bucket for TYPE_UNDEFINED (0) and any id outside 1..22. Then for class c:

- IoU = TP / union, union = the points of c, whatever they were predicted as (a defined point predicted
  undefined is a miss), + the points of defined classes predicted as c - TP (a point whose ground truth is
  undefined is not counted, whatever it was predicted as);
- a class with an empty union scores 1 (not 0 as the semantic-kitti-api, not left out as ScanNet's script);
- mIoU is the mean over the 22 classes.

The file: a SegmentationFrameList (pc3d.eval.waymo_protos): per frame, one TOP Laser whose ri_return1 and
ri_return2 carry ``segmentation_label_compressed``, zlib of a serialised MatrixInt32 [H, W, 2] (instance id 0,
semantic class), the layout of the dataset's labels and of Waymo's submission tutorial. A [H, W, 2] matrix is read
as its semantic channel; a [H, W] one (Waymo's example files) as it is. The tool compares the two returns pixel by
pixel; a frame whose prediction is missing counts as all undefined, a ground-truth frame without labels is skipped.
Checked against the output compute_segmentation_metrics_main's header documents for Waymo's example files
(fake_segmentation_predictions.bin, fake_segmentation_groundtruths.bin): README, Waymo Objects files.
"""
from __future__ import annotations

import os
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from pc3d.errors import DataFormatError
from pc3d.eval.waymo_protos import message_class, parse

NUM_TYPES = 23  # Segmentation.Type 0 (undefined) .. 22
TOP = 1


def waymo_confusion(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """int64 [23, 23] counts, rows ground truth, columns prediction, over every point; an id outside 1..22 counts as
    0 (undefined, the "other" bucket)."""
    pred, gt = np.asarray(pred).reshape(-1), np.asarray(gt).reshape(-1)
    if pred.shape != gt.shape:
        raise DataFormatError(None, f"{pred.size} predicted labels for {gt.size} labels")
    pred, gt = (np.where((a >= 1) & (a < NUM_TYPES), a, 0).astype(np.int64) for a in (pred, gt))
    return np.bincount(gt * NUM_TYPES + pred, minlength=NUM_TYPES ** 2).reshape(NUM_TYPES, NUM_TYPES)


def waymo_segmentation_iou(conf: np.ndarray) -> dict:
    """``{"iou": float64 [22] (classes 1..22), "mIoU"}`` of a waymo_confusion matrix, by the rules above."""
    conf = np.asarray(conf, np.int64)
    tp = np.diag(conf)[1:]
    union = conf[1:, :].sum(1) + conf[1:, 1:].sum(0) - tp
    # in float32, as the tool: 1.0f * intersection / union, summed in class order, over the number of classes
    iou = np.where(union > 0, tp.astype(np.float32) / np.maximum(union, 1).astype(np.float32), np.float32(1))
    total = np.float32(0)
    for value in iou:
        total = np.float32(total + value)
    return {"iou": iou.astype(np.float64), "mIoU": float(total / np.float32(len(iou)))}


def range_images(labels: np.ndarray, returns: Iterable[tuple[int, np.ndarray, tuple[int, int]]],
                 where: str | None = None) -> dict:
    """{1: int64 [H, W], 2: ...}: per-point `labels`, in order, put on the pixels of each (return, pixels [K, 2]
    (row, col), (H, W)) in turn; every other pixel, and a return not given, 0 (undefined). A count that does not
    fit is a DataFormatError naming `where` (the frame)."""
    labels = np.asarray(labels, np.int64).reshape(-1)
    images, start = {}, 0
    for ret, pixels, shape in returns:
        images[ret] = np.zeros(shape, np.int64)
        images[ret][pixels[:, 0], pixels[:, 1]] = labels[start:start + len(pixels)]
        start += len(pixels)
    if start != len(labels):
        raise DataFormatError(where, f"{len(labels)} labels for {start} range-image points")
    shape = next(iter(images.values())).shape if images else (0, 0)
    return {r: images.get(r, np.zeros(shape, np.int64)) for r in (1, 2)}


def _compressed(semantic: np.ndarray) -> bytes:
    image = np.zeros((*semantic.shape, 2), np.int32)
    image[..., 1] = semantic
    matrix = message_class("MatrixInt32")()
    matrix.shape.dims.extend(image.shape)
    matrix.data.extend(image.reshape(-1).tolist())
    return zlib.compress(matrix.SerializeToString())


class SegmentationFrameWriter:
    """A SegmentationFrameList built a frame at a time, each compressed as it comes (a frame's two label images
    are 2.7 MB as int64 arrays, a few kB compressed): add(frame) with frame ``{"context_name": str, "timestamp": int
    (µs), "returns": {1: int [H, W], 2: int [H, W]}}`` (the semantic class of every pixel of the TOP laser's two
    returns; 0 where no point is labelled), then write(), which puts the file on disk atomically."""

    def __init__(self, path: str | os.PathLike):
        self.path, self.frames = Path(path), message_class("SegmentationFrameList")()

    def __len__(self) -> int:
        return len(self.frames.frames)

    def add(self, frame: Mapping) -> None:
        images = {r: np.asarray(frame["returns"][r]) for r in (1, 2)}
        for r, image in images.items():
            if image.ndim != 2 or (image.size and (image.min() < 0 or image.max() >= NUM_TYPES)):
                raise DataFormatError(f"{self.path} ({frame['context_name']} {frame['timestamp']} return {r})",
                                      f"expected an [H, W] image of classes 0..{NUM_TYPES - 1}, got {image.shape} "
                                      f"in [{image.min(initial=0)}, {image.max(initial=0)}]")
        entry = self.frames.frames.add(context_name=str(frame["context_name"]),
                                       frame_timestamp_micros=int(frame["timestamp"]))
        laser = entry.segmentation_labels.add(name=TOP)
        laser.ri_return1.segmentation_label_compressed = _compressed(images[1])
        laser.ri_return2.segmentation_label_compressed = _compressed(images[2])

    def write(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_bytes(self.frames.SerializeToString())
        os.replace(tmp, self.path)
        return self.path


def write_segmentation_frames(path: str | os.PathLike, frames: Iterable[Mapping]) -> Path:
    """Write a SegmentationFrameList of `frames` (SegmentationFrameWriter.add's); returns the path."""
    writer = SegmentationFrameWriter(path)
    for frame in frames:
        writer.add(frame)
    return writer.write()


def _semantic(laser, ret: int, where: str) -> np.ndarray:
    data = getattr(laser, f"ri_return{ret}").segmentation_label_compressed
    try:
        raw = zlib.decompress(data)
    except zlib.error as error:
        raise DataFormatError(where, f"return {ret}: not zlib data ({error})") from None
    matrix = parse("MatrixInt32", raw, where)
    values, dims = np.asarray(matrix.data, np.int64), list(matrix.shape.dims)
    if int(np.prod(dims)) != values.size or len(dims) not in (2, 3) or (len(dims) == 3 and dims[2] != 2):
        raise DataFormatError(where, f"return {ret}: {values.size} values do not fit shape {dims} "
                                     "(expected [H, W, 2] or [H, W])")
    image = values.reshape(dims)
    return image[..., 1] if image.ndim == 3 else image


def read_segmentation_frames(path: str | os.PathLike) -> dict[tuple[str, int], dict]:
    """``{(context_name, timestamp): {"lasers": [laser names labelled], 1: int64 [H, W], 2: int64 [H, W]}}``: the
    TOP laser's semantic classes of each return where the frame labels the TOP laser alone (the only case the tool
    scores). A file or matrix protobuf cannot parse is a DataFormatError naming the file and frame."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "no such file")
    frames = {}
    for frame in parse("SegmentationFrameList", path.read_bytes(), path).frames:
        key = (frame.context_name, frame.frame_timestamp_micros)
        lasers = list(frame.segmentation_labels)
        frames[key] = {"lasers": [laser.name for laser in lasers]}
        if len(lasers) == 1 and lasers[0].name == TOP:
            frames[key] |= {r: _semantic(lasers[0], r, f"{path} ({key[0]} {key[1]})") for r in (1, 2)}
    return frames


def score_segmentation_files(predictions: Mapping, ground_truth: Mapping) -> dict:
    """compute_segmentation_metrics_main over two read_segmentation_frames results: ``{"iou": float64 [22],
    "mIoU", "frames": the ground-truth frames scored, "missing": of those, the frames without a valid prediction
    (scored as all undefined)}``. A ground-truth frame with no labels is skipped; one labelling other lasers is a
    DataFormatError (the tool stops there too)."""
    conf = np.zeros((NUM_TYPES, NUM_TYPES), np.int64)
    scored = missing = 0
    for key in sorted(set(predictions) | set(ground_truth)):
        gt = ground_truth.get(key, {"lasers": []})
        if not gt["lasers"]:
            continue
        if gt["lasers"] != [TOP]:
            raise DataFormatError(f"ground truth {key[0]} {key[1]}", f"labels lasers {gt['lasers']}: only the TOP "
                                                                     "laser (1) alone is scored")
        pred = predictions.get(key, {})
        missing += 1 not in pred
        for r in (1, 2):
            p = pred[r] if r in pred else np.zeros_like(gt[r])
            if p.size != gt[r].size:
                raise DataFormatError(f"prediction {key[0]} {key[1]}", f"return {r}: {p.size} labels for "
                                                                       f"{gt[r].size} ground-truth pixels")
            conf += waymo_confusion(p, gt[r])
        scored += 1
    return waymo_segmentation_iou(conf) | {"frames": scored, "missing": missing}
