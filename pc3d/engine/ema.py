"""Exponential moving average of model weights (Polyak averaging), used for evaluation when enabled.

    ema = ModelEMA(model, decay=0.999, warmup_steps=2000)
    ...after each optimizer step: ema.update(model)
    evaluate ema.model

The effective decay ramps up as `decay * (1 - exp(-step / warmup_steps))` (the YOLOv5 / timm
schedule) so the average is not dominated by the random initial weights.

What is averaged (`averaged_keys`): the floating-point parameters and the running statistics of normalisation
layers (running_mean / running_var of torch's _NormBase: BatchNorm, SyncBatchNorm, pc3d.sparse.BatchNorm1d,
InstanceNorm with running statistics), which follow the weights, as YOLOv5's ModelEMA and torch's
AveragedModel(use_buffers=True) average them. Every other state entry is copied from the model: integer buffers
(BatchNorm's num_batches_tracked, a mean teacher's step) and floating buffers that count or sum the data rather
than follow the weights (a mean teacher's reflectivity prior, pc3d.models.semi.ReflectivityPrior: averaged, its
float64 counts were fractional and lagged the model's), constants too. A checkpoint's EMA state loads as before.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


def averaged_keys(model: nn.Module) -> frozenset[str]:
    """The state_dict keys of `model` a weight average averages: its parameters and its norm layers' running_mean /
    running_var (see module doc); every other entry is copied."""
    keys = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    for prefix, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, nn.modules.batchnorm._NormBase):
            keys.update(f"{prefix}.{name}" if prefix else name for name in ("running_mean", "running_var"))
    return frozenset(keys)


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float = 0.999, warmup_steps: int = 0):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.warmup_steps = decay, warmup_steps
        self.updates = 0
        self.averaged = averaged_keys(self.model)

    def current_decay(self) -> float:
        if self.warmup_steps <= 0:
            return self.decay
        return self.decay * (1 - math.exp(-self.updates / self.warmup_steps))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        avg_f, new_f = [], []
        for (key, a), n in zip(self.model.state_dict().items(), model.state_dict().values(), strict=True):
            if key in self.averaged and a.dtype.is_floating_point:
                avg_f.append(a)
                new_f.append(n.detach())
            else:
                a.copy_(n)
        if avg_f:
            torch._foreach_lerp_(avg_f, new_f, 1.0 - d)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])
