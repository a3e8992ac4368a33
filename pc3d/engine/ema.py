"""Exponential moving average of model weights (Polyak averaging), used for evaluation when enabled.

    ema = ModelEMA(model, decay=0.999, warmup_steps=2000)
    ...after each optimizer step: ema.update(model)
    evaluate ema.model

The effective decay ramps up as `decay * (1 - exp(-step / warmup_steps))` (the YOLOv5 / timm
schedule) so the average is not dominated by the random initial weights. Floating-point parameters
and buffers are averaged; integer buffers (BatchNorm's num_batches_tracked) are copied.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float = 0.999, warmup_steps: int = 0):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.warmup_steps = decay, warmup_steps
        self.updates = 0

    def current_decay(self) -> float:
        if self.warmup_steps <= 0:
            return self.decay
        return self.decay * (1 - math.exp(-self.updates / self.warmup_steps))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        avg_f, new_f = [], []
        for a, n in zip(self.model.state_dict().values(), model.state_dict().values(), strict=True):
            if a.dtype.is_floating_point:
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
