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

bf16 pays only where the processor multiplies bf16 natively (AVX512_BF16 or AMX-BF16 on CPU; any
CUDA device). On a CPU without either, torch's bf16 matmuls fall back to scalar code (a 2048^3
GEMM measured 0.28 GFLOP/s against 102 in float32 on an AVX2 EPYC), so `resolve_precision`
runs such a recipe in float32 and says so; `PC3D_BF16=force` keeps bf16 anyway (tests, checks).
"""
from __future__ import annotations

import contextlib
import logging
import os

import torch
from torch import nn

from pc3d.errors import ConfigError

PRECISIONS = ("fp32", "bf16", "fp16")
ENV_BF16 = "PC3D_BF16"  # "force": bf16 autocast even on a CPU without bf16 instructions

log = logging.getLogger(__name__)


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


def cpu_multiplies_bf16() -> bool:
    """Whether this CPU has bf16 dot-product instructions (AVX512_BF16 or AMX-BF16)."""
    from pc3d_ops import amx, bf16

    return bf16.cpu_has_avx512_bf16() or amx.cpu_has_amx_bf16()


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision a run uses for the `precision` it asks: the same, except bf16 on a CPU that cannot
    multiply bf16 natively, which runs float32 with a warning (unless PC3D_BF16=force)."""
    check_precision(precision, device)
    if (precision == "bf16" and device.type == "cpu" and not cpu_multiplies_bf16()
            and os.environ.get(ENV_BF16, "") != "force"):
        log.warning("precision bf16 asked, but this CPU has no bf16 instructions (avx512_bf16 / amx_bf16): "
                    "torch's bf16 matmuls would run scalar code, far slower than float32. Running fp32 "
                    "(set %s=force to keep bf16).", ENV_BF16)
        return "fp32"
    return precision


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
