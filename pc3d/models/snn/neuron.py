"""The integer multi-spike neuron of E-3DSNN (one time step).

    forward   s = round(clamp(x, 0, max_spikes))      an integer spike count 0..max_spikes per neuron
    backward  ds/dx = 1 on 0 < x < max_spikes, else 0 (straight-through: the rounding is skipped)

round is torch.round (halves to even). One time step: the neuron has no membrane state carried between
calls, so it is a pure function of its input and any module instance can be reused.
"""
from __future__ import annotations

import torch
from torch import nn

MAX_SPIKES = 4


class _MultiSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, max_spikes: int) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.max_spikes = max_spikes
        return torch.round(torch.clamp(x, 0, max_spikes))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad * ((x > 0) & (x < ctx.max_spikes)).to(grad.dtype), None


def multi_spike(x: torch.Tensor, max_spikes: int = MAX_SPIKES) -> torch.Tensor:
    """Spike counts round(clamp(x, 0, max_spikes)) with the straight-through gradient on (0, max_spikes)."""
    return _MultiSpike.apply(x, max_spikes)


class MultiSpike(nn.Module):
    """The neuron as a module on [N, C] features (an `act` factory of pc3d.models.backbones3d.blocks)."""

    spiking = True  # its outputs are spike counts (energy accounting, zero-row skipping)

    def __init__(self, max_spikes: int = MAX_SPIKES):
        super().__init__()
        self.max_spikes = max_spikes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return multi_spike(x, self.max_spikes)

    def extra_repr(self) -> str:
        return f"max_spikes={self.max_spikes}"
