"""Evaluation: run a model over a dataset on every rank, gather the predictions, score them on rank 0.

Contract. In eval mode `model(batch)` returns a list with one prediction per sample of the batch,
in batch order (any picklable object, typically a dict of numpy arrays or CPU tensors). The
dataset scores the predictions of the whole split with `dataset.evaluate(predictions) -> dict`
(predictions in dataset index order), or an `evaluator(dataset, predictions) -> dict` callable is
passed instead; the engine never looks inside a prediction. A dataset may also offer
`write_predictions(predictions, out_dir)`, the hook `tools/test.py` uses to write the official
submission format. An evaluator with a `last_table` string attribute (e.g. the KITTI AP table)
gets that table printed and written to `metrics.md` by `tools/test.py` too.

Measurements. A module of the model may measure each sample while it predicts (a spiking layer counts its
spikes and synaptic operations): a module with `pop_measurements() -> list[dict] | None` hands over one
dict per sample of the last batch, and `predict` stores it in that sample's prediction dict under
`measurements[<module name>]`, where an evaluation hook such as pc3d.eval.hooks.EnergyReport reads it.
Such modules count only inside `measuring(model)` (which `predict` opens), so inference pays nothing.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from pc3d.engine import distributed
from pc3d.engine.data import eval_loader, to_cpu, to_device
from pc3d.engine.optim import autocast, resolve_precision
from pc3d.errors import ConfigError
from pc3d.utils.progress import Progress

log = logging.getLogger(__name__)
Evaluator = Callable[[Dataset, list], dict]


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, *, batch_size: int, workers: int, info: distributed.DistInfo,
            precision: str = "fp32", seed: int = 0) -> list[Any] | None:
    """Predictions for every sample of `dataset` in index order on rank 0 (None on other ranks);
    each rank predicts its shard."""
    precision = resolve_precision(precision, info.device)
    loader = eval_loader(dataset, batch_size=batch_size, workers=workers, rank=info.rank,
                         world_size=info.world_size, seed=seed, pin_memory=info.device.type == "cuda")
    was_training = model.training
    model.eval()
    indices = loader.sampler.indices
    mine: list[Any] = []
    try:
        with Progress(total=len(loader), desc="evaluate", unit="batch", enabled=info.is_main, log=log.info) as bar:
            for batch in loader:
                batch = to_device(batch, info.device)
                with autocast(precision, info.device), measuring(model):
                    out = model(batch)
                if not isinstance(out, list | tuple):
                    raise ConfigError(f"{type(model).__name__} in eval mode must return a list of per-sample "
                                      f"predictions, got {type(out).__name__}")
                attach_measurements(model, out)
                mine.extend(to_cpu(list(out)))
                bar.update()
    finally:
        model.train(was_training)
    if len(mine) != len(indices):
        raise ConfigError(f"{type(model).__name__} returned {len(mine)} predictions for {len(indices)} samples")
    shards = distributed.all_gather_objects(list(zip(indices, mine, strict=True)))
    if not info.is_main:
        return None
    ordered = sorted((pair for shard in shards for pair in shard), key=lambda p: p[0])
    return [p for _, p in ordered]


@contextlib.contextmanager
def measuring(model: nn.Module):
    """Within the block, every module of the model that can measure (has `pop_measurements`) does: its
    `measuring` flag is True, and restored after. Outside (inference, training) nothing is counted."""
    modules = [m for m in model.modules() if callable(getattr(m, "pop_measurements", None))]
    before = [getattr(m, "measuring", False) for m in modules]
    for m in modules:
        m.measuring = True
    try:
        yield model
    finally:
        for m, flag in zip(modules, before, strict=True):
            m.measuring = flag


def attach_measurements(model: nn.Module, predictions: list | tuple) -> None:
    """Each measuring module's per-sample dicts into predictions[i]["measurements"][module name]."""
    for name, module in model.named_modules():
        pop = getattr(module, "pop_measurements", None)
        per_sample = pop() if callable(pop) else None
        if per_sample is None:
            continue
        if len(per_sample) != len(predictions):
            raise ConfigError(f"{name} measured {len(per_sample)} samples of a batch of {len(predictions)}")
        for prediction, measured in zip(predictions, per_sample, strict=True):
            prediction.setdefault("measurements", {})[name] = measured


def score(dataset: Dataset, predictions: list, evaluator: Evaluator | None = None) -> dict:
    """Metrics of `predictions` (dataset index order) from `evaluator` or `dataset.evaluate`."""
    if evaluator is not None:
        return dict(evaluator(dataset, predictions))
    if not callable(getattr(dataset, "evaluate", None)):
        raise ConfigError(f"{type(dataset).__name__} has no evaluate(predictions) and no evaluator was given")
    return dict(dataset.evaluate(predictions))


def evaluate(model: nn.Module, dataset: Dataset, *, batch_size: int, workers: int, info: distributed.DistInfo,
             precision: str = "fp32", evaluator: Evaluator | None = None, seed: int = 0
             ) -> tuple[dict | None, list | None]:
    """(metrics, predictions) on rank 0, (None, None) on the other ranks."""
    start = time.perf_counter()
    predictions = predict(model, dataset, batch_size=batch_size, workers=workers, info=info,
                          precision=precision, seed=seed)
    if predictions is None:
        return None, None
    metrics = score(dataset, predictions, evaluator)
    log.info("evaluated %d samples in %.1f s", len(predictions), time.perf_counter() - start)
    return metrics, predictions
