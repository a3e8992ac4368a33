"""A trained run as a Python function of point clouds: ``Predictor(run)(points) -> prediction``.

    from pc3d.infer.predictor import Predictor

    predictor = Predictor("outputs/centerpoint_sim_kitti/<time>")   # a run folder or a checkpoint file
    pred = predictor(points)          # float [N, 3 + F]: x, y, z and predictor.feature_names
    pred["boxes"], pred["scores"], pred["names"]
    render_scene_png(predictor.scene(points, pred), "frame.png")   # pc3d.viz; or Viewer([scene]).run()

The run is loaded as tools/test.py and tools/infer.py load it (the run's config, EMA weights when the run kept
them) and a cloud goes through tools/infer.py's prepare step (``pc3d.infer.prepare``: the KITTI camera crop
when ``calib`` is given to a model trained on it, colours in 0..255 scaled, the run's evaluation transforms)
and its voxelizer, so a cloud gives the same prediction here as in a file read by tools/infer.py.

The prediction is the model contract's eval-mode dict of its task (``pc3d.models.contract``: boxes / scores /
labels, pred_labels per point, moving per point, flow per point, label / scores), plus ``names`` for boxes
(``class_names[label - 1]``). Per-point outputs follow the rows of ``points`` (after the camera crop, when one
is applied: ``pred["kept"]`` then says which input rows the model saw).

Input is checked before the model sees it: ``points`` is a 2-D array of exactly the run's columns, or a
point file read as tools/infer.py reads one (.bin / .npy / .npz / .pcd / .ply, columns by name where the
format names them). Rows with NaN / inf raise a DataFormatError naming the count, unless
``drop_nonfinite=True``, which drops them and returns ``kept`` (bool per input row). A scene-flow model takes
the pair, ``predictor(points, points2)``, and sees both clouds as given (tools/infer.py crops and samples
sequence frames first). A 4D MOS model or a multi-sweep detector (trained on a window of past scans:
dataset.n_past_scans) takes the scans of a sequence in order with their poses, ``predictor(points, pose=P)``,
and keeps the window between calls (``start_sequence()`` empties it), as tools/infer.py streams a
SemanticKITTI sequence folder or a Waymo segment; a MOS model's ``moving`` is per point of the scan given.
``Predictor(run, tta="flips")`` adds test-time augmentation, as ``tools/infer.py --tta``.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pc3d.engine.optim import autocast
from pc3d.errors import ConfigError, DataFormatError


class Predictor:
    """A tools/train.py run (folder: its best.pt, else the newest save; or a checkpoint file) as a function of
    point clouds. ``device``: where the model runs; ``use_ema``: the EMA weights when the run kept them;
    ``tta``: test-time augmentation, the views of ``pc3d.models.tta`` (mirror, flips, turns, d4) at
    ``tta_scales``, as ``tools/infer.py --tta``; ``precision``: "run" (the run's train.precision, as tools/test.py
    and tools/infer.py use), "fp32" or "bf16" (autocast; float32 on a CPU without bf16 instructions)."""

    def __init__(self, checkpoint: str | os.PathLike, *, device: str | torch.device = "cpu", use_ema: bool = True,
                 tta: str | None = None, tta_scales: Sequence[float] = (1.0,), precision: str = "run"):
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        from pc3d.data.batch import Collate
        from pc3d.engine.runner import find_checkpoint, load_trained
        from pc3d.infer.outputs import box_class_names
        from pc3d.infer.prepare import feature_names, inference_precision, preparer
        from pc3d.models.contract import task_of

        path = Path(checkpoint)
        self.checkpoint = find_checkpoint(str(path), None) if path.is_file() else find_checkpoint(None, str(path))
        model, cfg, _ = load_trained(self.checkpoint, use_ema=use_ema)
        self.device = torch.device(device)
        self.precision = inference_precision(cfg, precision, self.device)
        self.model = model.to(self.device).eval()
        self.task = task_of(model)
        self.config = cfg
        self.window = None
        if int(cfg.dataset.get("n_past_scans") or 0) > 0:
            if self.task not in ("mos", "detection"):
                raise ConfigError(f"{self.checkpoint}: the model was trained on {cfg.dataset.n_past_scans} past scans "
                                  "merged into each frame (dataset.n_past_scans); windows of scans stream for mos "
                                  "and detection models only: evaluate it with tools/test.py")
            from pc3d.infer.scan_window import window_of_dataset

            self.window = window_of_dataset(cfg.dataset)
        self.feature_names = feature_names(cfg.dataset)
        self.columns = ("x", "y", "z", *self.feature_names)
        dataset = OmegaConf.to_container(cfg.dataset, resolve=True)
        self.class_names = box_class_names(dataset) if self.task in ("detection", "mos") else list(
            dataset.get("class_names") or [])
        voxelizer = cfg.dataset.get("voxelizer")
        self.collate = Collate(instantiate(voxelizer, _convert_="all") if voxelizer else None)
        if tta:
            self.augment(tta, tta_scales)
        self.prepare = preparer(cfg, self.window)
        self._sequence = 0  # a new name after every start_sequence(): the window drops its scans

    def augment(self, tta: str, tta_scales: Sequence[float] = (1.0,)) -> None:
        """Wrap the model in test-time augmentation: the views `tta` of pc3d.models.tta at `tta_scales`."""
        from pc3d.models.tta import TestTimeAugmented, views

        self.model = TestTimeAugmented(self.model, self.collate.voxelizer, views(tta, tta_scales)).to(self.device)

    def start_sequence(self) -> None:
        """A windowed model's (4D MOS, multi-sweep detection) next cloud starts a new sequence: the past scans
        leave its window."""
        self._sequence += 1

    def __repr__(self) -> str:
        return (f"Predictor({type(self.model).__name__}, task={self.task!r}, precision={self.precision!r}, "
                f"columns={self.columns}, checkpoint={str(self.checkpoint)!r})")

    def __call__(self, points: np.ndarray | str | os.PathLike, points2: np.ndarray | str | os.PathLike | None = None,
                 *, calib=None, image_shape: tuple[int, int] | None = None, pose=None, scan: int | None = None,
                 frame_id: str = "cloud", drop_nonfinite: bool = False) -> dict[str, Any]:
        """The prediction for one cloud (a pair for scene flow): an array, or a point file that tools/infer.py
        reads (.bin / .npy / .npz / .pcd / .ply; columns by name where the format names them); see the module doc.

        calib: a pc3d.geometry.calib.KittiCalib (or a KITTI calib file) for the camera crop of a model trained on
        it; image_shape: (height, width) of that camera's image (KITTI: the frame's image_2 PNG; default KITTI's
        usual 375 x 1242). pose: a windowed model's pose of the scan ([4, 4], sensor -> world; SemanticKITTI:
        ``pc3d.data.semantickitti.lidar_poses``, Waymo: ``WaymoDataset.vehicle_pose``); scan: its number in the
        sequence (default: the one after the previous call's); scans in the order of the sequence."""
        from pc3d.infer.sources import SourceFrame

        if (points2 is not None) != (self.task == "flow"):
            raise ConfigError("a scene-flow model takes two clouds, predictor(points, points2)" if self.task == "flow"
                              else f"points2 is for scene-flow models; this one's task is {self.task}")
        if (pose is not None) != (self.window is not None):
            raise ConfigError(f"a model of {self.window.n_past_scans} past scans needs each scan's pose: "
                              "predictor(points, pose=<4 x 4>), scans in order" if self.window is not None else
                              "pose is for models of past scans (dataset.n_past_scans); this one sees one cloud at "
                              "a time")
        if isinstance(points, str | os.PathLike) and frame_id == "cloud":
            frame_id = Path(points).stem
        points, kept = self._checked(points, "points", drop_nonfinite)
        if self.task == "flow":
            second, _ = self._checked(points2, "points2", drop_nonfinite)
            sample = {"frame_id": frame_id, "points": points[:, :3].copy(), "points2": second[:, :3].copy(), "seed": 0}
        else:
            if calib is not None and self.config.dataset.get("fov_only", False):
                from pc3d.data.kitti import IMAGE_SHAPE, fov_mask
                from pc3d.geometry.calib import KittiCalib

                calib = calib if isinstance(calib, KittiCalib) else KittiCalib.from_file(calib)
                seen = fov_mask(points, calib, image_shape or IMAGE_SHAPE)  # prepare()'s crop, here to keep rows
                points = points[seen]
                kept = seen if kept is None else _expand(kept, seen)
            extra = {} if pose is None else {"pose": pose} if scan is None else {"pose": pose, "scan": int(scan)}
            sample = self.prepare(SourceFrame(frame_id, str(self._sequence), points, Path(frame_id), extra=extra))
        batch = self.collate([sample])
        with torch.no_grad(), autocast(self.precision, self.device):
            pred = self.model({k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()})[0]
        if "boxes" in pred and self.class_names:
            pred["names"] = [self.class_names[int(i) - 1] for i in np.asarray(pred["labels"])]
        if kept is not None:
            pred["kept"] = kept
        return pred

    def scene(self, points: np.ndarray | str | os.PathLike, prediction: dict, threshold: float = 0.3,
              name: str = ""):
        """A pc3d.viz.Scene of the cloud `points` (as given to the call) and its `prediction`, to render
        (``pc3d.viz.render_scene_png(scene, "frame.png")``) or look at (``pc3d.viz.Viewer([scene]).run()``):
        boxes scoring at least `threshold` (tools/visualize.py's default), points by predicted class (the
        dataset's colours) or static / moving, flow arrows. Only the rows the model saw are drawn
        (``prediction["kept"]``: the camera crop, NaN rows dropped)."""
        from pc3d.viz import Scene

        if isinstance(points, str | os.PathLike):
            from pc3d.infer.point_files import read_cloud

            cloud = read_cloud(Path(points), self.feature_names, pad=True)
            rows, read = cloud.points, cloud.kept  # finite rows, and which rows of the file they are
        else:
            rows, read = np.asarray(points, np.float32), None
        kept = prediction.get("kept")  # over the rows given (a file's: all of them, NaN ones included)
        if kept is not None:
            rows = rows[kept if read is None else kept[read]]
        if "scores" in prediction:
            sure = np.asarray(prediction["scores"]) >= threshold
            prediction = {**prediction, **{k: np.asarray(prediction[k])[sure] for k in ("boxes", "scores", "labels")}}
        return Scene.from_prediction(rows, prediction, name=name, palette=self._palette, view=self._view)

    @functools.cached_property
    def _palette(self) -> np.ndarray | None:
        """The colours of a segmentor's classes: its dataset's label space, else None (a generated palette)."""
        if self.task != "segmentation":
            return None
        from omegaconf import OmegaConf

        from pc3d.infer.outputs import label_space

        dataset = OmegaConf.to_container(self.config.dataset, resolve=True)
        return label_space(dataset, int(self.config.model.get("num_classes") or len(self.class_names))).colors

    @functools.cached_property
    def _view(self) -> str:
        from hydra.utils import get_class

        return "overview" if getattr(get_class(self.config.dataset._target_), "indoor", False) else "driving"

    def _checked(self, points, name: str, drop_nonfinite: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """(float32 [N, columns] rows the model sees, the bool mask of kept input rows or None when all are)."""
        if isinstance(points, str | os.PathLike):  # a point file, read as tools/infer.py reads one
            from pc3d.infer.point_files import fit_columns, read_cloud

            path = Path(points)
            cloud = read_cloud(path, self.feature_names)
            if cloud.dropped and not drop_nonfinite:
                raise DataFormatError(path, f"{cloud.dropped} of {cloud.rows} rows have NaN / inf values; "
                                            "drop_nonfinite=True drops them")
            return np.array(fit_columns(cloud.points, self.feature_names, path, cloud.names)), cloud.kept
        if isinstance(points, torch.Tensor):
            points = points.detach().cpu().numpy()
        points = np.asarray(points)
        if points.ndim != 2 or points.shape[1] != len(self.columns) or not np.issubdtype(points.dtype, np.number):
            raise DataFormatError(name, f"expected a numeric array [N, {len(self.columns)}] of columns "
                                        f"{', '.join(self.columns)}, got {points.dtype} {list(points.shape)}")
        if len(points) == 0:
            raise DataFormatError(name, "the cloud is empty (0 points)")
        points = np.array(points, np.float32)  # a copy: prepare() scales colour columns in place
        good = np.isfinite(points).all(1)
        if good.all():
            return points, None
        bad = np.flatnonzero(~good)
        if not drop_nonfinite or len(bad) == len(points):
            raise DataFormatError(name, f"{len(bad)} of {len(points)} rows have NaN / inf values (the first: row "
                                        f"{bad[0]})" + ("; drop_nonfinite=True drops them" if len(bad) < len(points)
                                                        else ""))
        return points[good], good


def _expand(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The mask over the input rows of `inner`, a mask over the rows `outer` kept."""
    out = np.zeros(len(outer), bool)
    out[np.flatnonzero(outer)[inner]] = True
    return out
