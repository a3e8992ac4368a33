"""What tools/infer.py wrote (pc3d.infer.outputs), read back frame by frame as scenes to draw
(tools/visualize.py: PNGs or the Open3D viewer).

tools/infer.py writes ``<out>/predictions.json`` first: the task, the checkpoint, the run's dataset config
(its label space reads the label files back), the class names and the colours it renders with. A frame's
files are found by its frame id, as the writers name them, and read as the dataset's own format:

    detection       json/<frame>.json (pc3d.eval.box_json): boxes (LiDAR frame; ScanNet: the aligned scene
                    frame), scores, labels
    segmentation    json/<frame>.json names the frame's label file (relative to <out>), one label per row of the
                    file read, back to train ids through the dataset's label space (LabelSpace.read)
    mos             the same, train ids 1 static / 2 moving, drawn in MosOutput's colours
    flow            flow/<frame>.npy: [N, 3] per row of the file read, NaN where the model did not look
    classification  nothing per point: the cloud alone

    results = InferResults(Path("outputs/infer"))
    scene = results.scene(frame)      # frame: a pc3d.infer.sources.SourceFrame of the same source
    scene = results.scene(frame, labels="errors")   # right / wrong against the frame's ground-truth labels

Per-point colours (``labels``): "pred" the predicted classes; "truth" the ground truth of a frame that has a
label file (a SemanticKITTI sequence's labels/, a ScanNet scene's labels .ply; read through the same label
space); "errors" grey where the prediction is right, red where it is wrong, dark where the ground truth is
unlabelled.

A folder without predictions.json (written before it existed) is a json/ folder of detection files, or
a folder holding one. A frame with no output (skipped by tools/infer.py, or not reached by --max-frames) is
drawn without predictions; a file that is there but malformed is a DataFormatError naming it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pc3d.errors import ConfigError, DataFormatError
from pc3d.eval.box_json import read_box_json, read_json_object
from pc3d.infer.sources import SourceFrame

MANIFEST = "predictions.json"
LABELS = ("pred", "truth", "errors")
# colours of --labels errors: unlabelled in the ground truth, right, wrong
ERROR_PALETTE = np.array([[0.2, 0.2, 0.22], [0.62, 0.62, 0.62], [1.0, 0.12, 0.08]], np.float32)


def write_manifest(out: Path, task: str, checkpoint: Path, dataset_cfg: dict, num_classes: int,
                   palette: np.ndarray | None) -> Path:
    """<out>/predictions.json: what InferResults needs to read the folder back."""
    out.mkdir(parents=True, exist_ok=True)
    payload = {"task": task, "checkpoint": str(checkpoint), "num_classes": int(num_classes), "dataset": dataset_cfg,
               "palette": None if palette is None else np.round(np.asarray(palette, np.float64), 4).tolist()}
    path = out / MANIFEST
    path.write_text(json.dumps(payload, indent=1))
    return path


def _file_rows(frame: SourceFrame) -> int:
    """Rows of the file the frame was read from (per-point outputs have one per row, NaN rows included)."""
    kept = frame.extra.get("kept")
    return len(frame.points) if kept is None else len(kept)


def _frame_rows(frame: SourceFrame, values: np.ndarray) -> np.ndarray:
    """The rows of per-file-row `values` that the frame's points are (the finite rows)."""
    kept = frame.extra.get("kept")
    return values if kept is None else values[kept]


class InferResults:
    """tools/infer.py's output folder (or, without predictions.json, a json/ folder of detection files);
    ``InferResults.ground_truth(dataset_cfg)``: no predictions, the ground truth of a segmentation dataset."""

    def __init__(self, folder: Path | None):
        self.folder = None if folder is None else Path(folder)
        self.space = self.palette = self.boxes = None
        self.ignore_index = -1
        self.view = "driving"  # the offscreen camera (pc3d.viz.Scene.view)
        self.task = "detection"
        if self.folder is None:
            return
        manifest = self.folder / MANIFEST
        if not manifest.is_file():  # a detection json/ folder, or the folder holding one
            self.boxes = self.folder / "json" if (self.folder / "json").is_dir() else self.folder
            return
        info = read_json_object(manifest)
        try:
            self.task, dataset_cfg, num_classes = str(info["task"]), info["dataset"], int(info["num_classes"])
        except (KeyError, TypeError, ValueError) as error:
            raise DataFormatError(manifest, f"not a tools/infer.py manifest ({type(error).__name__}: "
                                            f"{error})") from None
        self.boxes = self.folder / "json"
        self._dataset(dataset_cfg, num_classes, info.get("palette"))

    @classmethod
    def ground_truth(cls, dataset_cfg: dict, num_classes: int = 0) -> InferResults:
        """No predictions: scene(frame, labels="truth") colours a frame by its ground-truth label file, read
        through the label space of `dataset_cfg` (e.g. {"_target_": "pc3d.data.SemanticKittiDataset"})."""
        out = cls(None)
        out.task = "segmentation"
        out._dataset(dataset_cfg, num_classes, None)
        return out

    def _dataset(self, dataset_cfg: dict, num_classes: int, palette) -> None:
        """The camera and, for per-point outputs, the label space, its ignore id and the colours."""
        from pc3d.infer.outputs import dataset_class, label_space

        if getattr(dataset_class(dataset_cfg), "indoor", False):
            self.view = "overview"
        if self.task in ("segmentation", "mos"):
            self.space = label_space(dataset_cfg, num_classes)
            self.ignore_index = int(getattr(dataset_class(dataset_cfg), "ignore_index", -1))
            self.palette = np.asarray(palette, np.float32) if palette is not None else self.space.colors

    def __repr__(self) -> str:
        return f"InferResults({self.folder}, task={self.task!r})"

    def scene(self, frame: SourceFrame, threshold: float = 0.3, gt_boxes: np.ndarray | None = None,
              labels: str = "pred"):
        """The pc3d.viz.Scene of `frame` with its predictions (boxes at score >= threshold, point classes or
        flow) and `gt_boxes` when given; `labels` (segmentation, MOS): what colours the points (see above)."""
        from pc3d.viz import Scene

        if labels not in LABELS:
            raise ConfigError(f"labels must be one of {LABELS}, got {labels!r}")
        if labels != "pred" and self.space is None:
            raise ConfigError(f"labels={labels!r} colours the points of a segmentation or MOS output; "
                              f"{self.folder} holds a {self.task} one")

        summary = None if self.boxes is None else self.boxes / f"{frame.frame_id}.json"
        found = summary is not None and summary.is_file()
        if self.task == "detection":
            pred = read_box_json(summary, threshold) if found else None
            return Scene.from_prediction(frame.points, pred, gt_boxes, frame.frame_id, view=self.view)
        scene = Scene(frame.points, gt_boxes, name=frame.frame_id, view=self.view)
        if self.task == "flow":
            path = self.folder / "flow" / f"{frame.frame_id}.npy"
            if path.is_file():
                scene.flow = _frame_rows(frame, self.flow(path, _file_rows(frame)))
        elif self.space is not None:
            pred = self.point_labels(summary, _file_rows(frame)) if found else None
            truth = None if labels == "pred" else self.truth(frame)
            if labels == "errors" and pred is not None:
                unlabelled = (truth == self.ignore_index) | (truth < 0)
                scene.point_labels = _frame_rows(frame, np.where(unlabelled, 0, np.where(pred == truth, 1, 2)))
                scene.palette = ERROR_PALETTE
            elif (truth if labels == "truth" else pred) is not None:
                scene.point_labels = _frame_rows(frame, truth if labels == "truth" else pred)
                scene.palette = self.palette
        return scene

    def truth(self, frame: SourceFrame) -> np.ndarray:
        """Train ids of the frame's ground-truth label file, one per row of the file read."""
        path = frame.extra.get("labels")
        if path is None:
            raise DataFormatError(frame.source, "has no ground-truth label file (a SemanticKITTI sequence's "
                                                "labels/NNNNNN.label, a ScanNet scene's labels .ply) to colour "
                                                "the points by")
        return self.space.read(Path(path), _file_rows(frame))

    def point_labels(self, summary: Path, rows: int) -> np.ndarray:
        """Train ids [rows] of the label file a frame's JSON summary names."""
        name = read_json_object(summary).get("labels")
        if not isinstance(name, str):
            raise DataFormatError(summary, "names no label file (a tools/infer.py segmentation summary has 'labels')")
        path = Path(name) if Path(name).is_absolute() else self.folder / name
        return self.space.read(path, rows)

    @staticmethod
    def flow(path: Path, rows: int) -> np.ndarray:
        from pc3d.data.io import load_npy

        flow = load_npy(path)
        if flow.shape != (rows, 3) or flow.dtype.kind != "f":
            raise DataFormatError(path, f"expected float flow [{rows}, 3] (one row per point of the file), got "
                                        f"{flow.dtype} {flow.shape}")
        return flow.astype(np.float32)
