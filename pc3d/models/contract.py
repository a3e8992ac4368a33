"""The model contract: what every pc3d model is, takes and returns, whatever its task.

A model is an ``nn.Module`` with a class attribute ``task`` (one of ``TASKS``) that takes the batch of
``pc3d.data.batch`` (its docstring is the input contract) and

- in train mode returns a dict with a scalar tensor ``loss`` (what the optimizer minimises) plus any
  other scalar terms, which the trainer logs;
- in eval mode returns a list with one prediction dict per sample, in batch order, with numpy arrays
  (or Python scalars) laid out by task as below. ``check_prediction`` checks one of them.

The engine (trainer, evaluator, checkpoints) never looks inside a prediction; the evaluation hooks
(``pc3d.eval.hooks``), dataset writers and ``tools/infer.py`` read them by task.

Predictions per task (every one has ``frame_id`` str, the sample's)
-------------------------------------------------------------------
detection       boxes      float32 [K, 7 (+2)]  LiDAR frame: x, y, z (centre), dx, dy, dz, heading (, vx, vy)
                scores     float32 [K]          confidence in [0, 1]
                labels     int64 [K]            class id 1..num_classes: ``class_names[id - 1]``
segmentation    pred_labels int64 [N]           one train id per point of the sample's ``points`` (the raw
                                                scan: a point outside the voxel grid takes its nearest
                                                voxel's label)
mos             moving     uint8 [N]            1 moving, 0 static, per point of the *current* scan
                                                (the first ``num_current_points`` rows of ``points``)
                boxes, scores, labels           optional: the instance branch's detections, as detection
flow            flow       float32 [N, 3]       motion of every point of the first cloud (``points``), metres
classification  label      int64 scalar         the predicted class id 0..num_classes-1
                scores     float32 [num_classes] class probabilities

Any task may add keys (e.g. ``point_labels``, the ground truth echoed for the evaluation hook, or
``logits``); the keys above are the ones readers rely on.

A detector whose boxes are axis aligned (heading always 0: the indoor one) says so with a class attribute
``axis_aligned = True``. Test-time augmentation (``pc3d.models.tta``) takes any detector and any flow model, a
segmentor that offers ``class_probabilities(batch) -> (float32 [sum N, K], mapped bool [sum N])`` and
``predictions(batch, scores, mapped) -> list[dict]`` (the eval-mode list from the scores of the mapped points),
and a mos model that offers ``moving_probabilities(batch) -> {"probabilities": float32 [sum N, 2] (static,
moving; every point of the window), "mapped": bool [sum N] (, "detections": per-sample box dicts)}`` and
``predictions(batch, scores, mapped (, detections))``.

A model that keeps state from frame to frame may offer ``start_sequence(name)``; ``tools/infer.py``
(``pc3d.infer.stream``) calls it before the first frame of every sequence. No model does today: a 4D MOS run's
past scans live in the inference prepare step (``pc3d.infer.scan_window``), told the same way.
A model whose training state moves by optimizer step, not by forward call, may offer ``after_optimizer_step()``;
the trainer (``pc3d.engine.trainer``) calls it after every optimizer step it applied (not after an accumulation
micro-batch, not after a step it skipped for non-finite gradients), before its own EMA of the weights: the mean
teacher (``pc3d.models.semi``) moves its EMA teacher and counts its steps there; its forward only reads them.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pc3d.errors import ConfigError

TASKS = ("detection", "segmentation", "mos", "flow", "classification")

# key -> (dtype kind: "f" float, "i" integer (bool / uint included), trailing shape: None = any length,
# int = fixed); the leading axis is the per-box / per-point count and must agree within a group.
_SCHEMA: dict[str, dict[str, tuple[str, tuple]]] = {
    "detection": {"boxes": ("f", (None, (7, 9))), "scores": ("f", (None,)), "labels": ("i", (None,))},
    "segmentation": {"pred_labels": ("i", (None,))},
    "mos": {"moving": ("i", (None,))},
    "flow": {"flow": ("f", (None, 3))},
    "classification": {"label": ("i", ()), "scores": ("f", (None,))},
}
_OPTIONAL_BOXES = ("boxes", "scores", "labels")


def task_of(model: Any) -> str:
    """The model's ``task``; ConfigError when it has none or an unknown one."""
    task = getattr(model, "task", None)
    if task not in TASKS:
        raise ConfigError(f"{type(model).__name__} must have a class attribute task in {TASKS}, got {task!r}")
    return task


def _kind(array: np.ndarray) -> str:
    return "f" if np.issubdtype(array.dtype, np.floating) else "i" if (
        np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_) else "?"


def _check_array(task: str, key: str, value, kind: str, shape: tuple, frame) -> np.ndarray:
    array = np.asarray(value)
    where = f"{task} prediction of {frame!r}: {key}"
    if _kind(array) != kind:
        raise ConfigError(f"{where} must be {'a float' if kind == 'f' else 'an integer'} array, got {array.dtype}")
    if array.ndim != len(shape):
        raise ConfigError(f"{where} must have {len(shape)} dimension(s), got shape {array.shape}")
    for size, want in zip(array.shape[1:], shape[1:], strict=True):
        allowed = want if isinstance(want, tuple) else (want,)
        if size not in allowed:
            raise ConfigError(f"{where} has shape {array.shape}; trailing size must be in {allowed}")
    return array


def check_prediction(task: str, prediction: Mapping, num_points: int | None = None) -> None:
    """ConfigError naming the frame and key when `prediction` breaks the schema of `task`.

    num_points: the number of points the per-point output must cover (segmentation: the sample's
    points; mos: its current scan; flow: the first cloud), checked when given.
    """
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; tasks are {TASKS}")
    if not isinstance(prediction, Mapping):
        raise ConfigError(f"a {task} prediction must be a dict, got {type(prediction).__name__}")
    frame = prediction.get("frame_id")
    if not isinstance(frame, str):
        raise ConfigError(f"a {task} prediction needs frame_id (str), got {frame!r}")
    schema = dict(_SCHEMA[task])
    if task == "mos" and any(k in prediction for k in _OPTIONAL_BOXES):
        schema.update(_SCHEMA["detection"])
    arrays = {}
    for key, (kind, shape) in schema.items():
        if key not in prediction:
            raise ConfigError(f"{task} prediction of {frame!r} has no {key!r} (keys: {sorted(prediction)})")
        arrays[key] = _check_array(task, key, prediction[key], kind, shape, frame)
    if task in ("detection", "mos") and "boxes" in arrays:
        counts = {k: len(arrays[k]) for k in _OPTIONAL_BOXES}
        if len(set(counts.values())) != 1:
            raise ConfigError(f"{task} prediction of {frame!r}: boxes, scores and labels differ in length {counts}")
        if len(arrays["labels"]) and arrays["labels"].min() < 1:
            raise ConfigError(f"{task} prediction of {frame!r}: labels are class ids 1..K, "
                              f"got {arrays['labels'].min()}")
    if task == "classification" and len(arrays["scores"]) and not 0 <= int(arrays["label"]) < len(arrays["scores"]):
        raise ConfigError(f"classification prediction of {frame!r}: label {int(arrays['label'])} outside "
                          f"0..{len(arrays['scores']) - 1}")
    per_point = {"segmentation": "pred_labels", "mos": "moving", "flow": "flow"}.get(task)
    if per_point and num_points is not None and len(arrays[per_point]) != num_points:
        raise ConfigError(f"{task} prediction of {frame!r}: {per_point} has {len(arrays[per_point])} rows for "
                          f"{num_points} points")
