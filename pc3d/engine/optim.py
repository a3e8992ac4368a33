"""Optimizer parameter groups, mixed precision and gradient clipping.

Optimizers are plain torch classes chosen in `configs/optim/*.yaml` with `_target_` and
`_partial_: true` (torch.optim.AdamW, Adam for the one-cycle recipe, SGD); the trainer calls
the partial with `param_groups(model)`, which exempts biases and normalisation weights (1-D
parameters) from weight decay.

Precision (`train.precision`): `fp32`; `bf16` (autocast to bfloat16, on CPU or CUDA; no loss
scaling needed); `fp16` (CUDA only: autocast to float16 with a GradScaler). Under bf16 autocast the
native sparse convs multiply in bf16 with float32 sums too (pc3d.sparse.ops); parameters, their
gradients and BatchNorm statistics stay float32. A loss must cast bf16 logits to float32 itself:
autocast leaves sigmoid / log in bf16, where 1 - 1e-4 rounds to 1.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from pc3d.errors import ConfigError

PRECISIONS = ("fp32", "bf16", "fp16")


def param_groups(model: nn.Module, no_decay_1d: bool = True) -> list[dict]:
    """[{"params": weights}, {"params": biases and norm weights, "weight_decay": 0.0}] (trainable only)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if no_decay_1d and p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def check_precision(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS:
        raise ConfigError(f"train.precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision=fp16 needs a CUDA device; use bf16 on CPU")


def autocast(precision: str, device: torch.device):
    """The autocast context for `precision` (a no-op context for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler, enabled only for fp16 (its state is saved in checkpoints either way)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def clip_gradients(parameters, max_norm: float | None) -> torch.Tensor | None:
    """Clip the global gradient norm to `max_norm` (None: no clipping); returns the norm (a tensor, no sync)."""
    if not max_norm:
        return None
    return torch.nn.utils.clip_grad_norm_(parameters, max_norm)
