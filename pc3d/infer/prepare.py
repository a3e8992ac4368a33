"""How a trained run's model sees a frame at inference: its feature columns and its prepare step.

``pc3d.infer.predictor.Predictor`` builds its prepare step from these, and ``tools/infer.py`` streams frames
through the Predictor's, so a cloud in memory and a file give a model the same input.
"""
from __future__ import annotations

import numpy as np


def feature_names(dataset_cfg) -> tuple[str, ...]:
    """The dataset's point feature columns after x, y, z: what the model was trained on."""
    from hydra.utils import get_class

    return tuple(get_class(dataset_cfg._target_).feature_names)


def preparer(cfg, window=None):
    """frame -> sample: the field-of-view crop of datasets trained on it (KITTI, with calibration); colour
    columns (features r, g, b) given in 0..255, as ScanNet .bin files keep them, scaled to the 0..1 the
    datasets load; then the run's evaluation transforms, deterministically. With a ScanWindow (4D MOS):
    frame -> the window's sample -> the transforms (a WindowedPrepare, told when a sequence starts)."""
    from hydra.utils import instantiate

    from pc3d.data.kitti import IMAGE_SHAPE, fov_mask
    from pc3d.data.transforms import Compose

    transforms = Compose(instantiate(cfg.dataset.get("transforms") or [], _convert_="all"))
    fov_only = bool(cfg.dataset.get("fov_only", False))
    colours = [3 + i for i, name in enumerate(feature_names(cfg.dataset)) if name in ("r", "g", "b")]

    def prepare(frame):
        points = frame.points
        if fov_only and frame.calib is not None:
            points = points[fov_mask(points, frame.calib, frame.extra.get("image_shape", IMAGE_SHAPE))]
            frame.points = points
        if colours and len(points) and points[:, colours].max() > 1.0:
            points[:, colours] /= 255.0
        return transforms({"frame_id": frame.frame_id, "points": points, "seed": 0}, np.random.default_rng(0))

    if window is not None:
        from pc3d.infer.scan_window import WindowedPrepare

        return WindowedPrepare(window, lambda sample: transforms(sample, np.random.default_rng(0)))
    return prepare


def inference_precision(cfg, asked: str, device) -> str:
    """The precision of a run's forward at inference: `asked` ("fp32", "bf16"), or with "run" the precision
    the run trained in (train.precision; tools/test.py evaluates in it too); bf16 on a CPU without bf16
    instructions runs fp32 with a warning (pc3d.engine.optim.resolve_precision)."""
    import torch

    from pc3d.engine.optim import resolve_precision
    from pc3d.errors import ConfigError

    if asked not in ("run", "fp32", "bf16"):
        raise ConfigError(f"precision must be 'run' (the run's train.precision), 'fp32' or 'bf16', got {asked!r}")
    precision = str((cfg.get("train") or {}).get("precision", "fp32")) if asked == "run" else asked
    if precision == "fp16" and torch.device(device).type == "cpu":
        precision = "fp32"  # a CUDA-trained fp16 run on a CPU
    return resolve_precision(precision, torch.device(device))
