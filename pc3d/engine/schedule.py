"""Learning-rate schedules, stepped once per optimizer step (not per epoch), with linear warm-up.

Each schedule is a pure function `factor(step)` of the optimizer step; `lr = base_lr * factor`
for every parameter group (base_lr = the group's lr when the schedule is built). Its state is
just the step counter, so resume is exact. Configs build them with `_partial_: true`; the
trainer supplies the optimizer and the total number of optimizer steps:

    schedule = instantiate(cfg.schedule)(optimizer, total_steps=...)

Warm-up: `warmup_steps` (or `warmup_ratio` of the total) steps rising linearly from
`warmup_start_factor` to 1. `OneCycle` follows OpenPCDet's adam_onecycle: cosine rise from
max_lr / div_factor to max_lr over `pct_start` of training, cosine fall to
max_lr / div_factor / final_div_factor, momentum (Adam's beta1 or SGD's momentum) cycled in
the opposite direction.
"""
from __future__ import annotations

import math

from torch.optim import Optimizer

from pc3d.errors import ConfigError


def _number(name: str, value, low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> float:
    """`value` as a float in the interval (ConfigError naming schedule.<name> otherwise)."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ConfigError(f"schedule.{name} must be a number in {interval}, got {value!r}")
    return float(value)


def _cos(start: float, end: float, t: float) -> float:
    """Cosine interpolation from start (t=0) to end (t=1)."""
    return end + (start - end) * (1 + math.cos(math.pi * min(max(t, 0.0), 1.0))) / 2


class Schedule:
    """Base: a per-step lr factor with linear warm-up; subclasses define `decay(progress)`."""

    def __init__(self, optimizer: Optimizer, total_steps: int, *, warmup_steps: int = 0, warmup_ratio: float = 0.0,
                 warmup_start_factor: float = 0.001):
        if total_steps < 1:
            raise ConfigError(f"schedule: total_steps must be >= 1, got {total_steps}")
        self.optimizer = optimizer
        self.total_steps = int(total_steps)
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ConfigError(f"schedule.warmup_steps must be an int >= 0, got {warmup_steps!r}")
        warmup_ratio = _number("warmup_ratio", warmup_ratio, 0, 1, high_open=True)
        warmup_start_factor = _number("warmup_start_factor", warmup_start_factor, 0, 1)
        self.warmup_steps = warmup_steps or round(warmup_ratio * total_steps)
        if not 0 <= self.warmup_steps < total_steps:
            raise ConfigError(f"schedule: warm-up of {self.warmup_steps} steps must be shorter than training "
                              f"({total_steps} steps)")
        self.warmup_start_factor = warmup_start_factor
        self.base_lrs = [g.setdefault("initial_lr", g["lr"]) for g in optimizer.param_groups]
        self.step_count = 0
        self._apply()

    def decay(self, progress: float) -> float:
        """lr factor after warm-up, progress in [0, 1]."""
        raise NotImplementedError

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            w = self.warmup_start_factor
            return w + (1 - w) * step / self.warmup_steps
        span = max(self.total_steps - self.warmup_steps, 1)
        return self.decay(min((step - self.warmup_steps) / span, 1.0))

    def _apply(self) -> None:
        f = self.factor(self.step_count)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * f

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self._apply()


class WarmupCosine(Schedule):
    """Warm-up, then cosine from 1 to `min_lr_ratio`."""

    def __init__(self, optimizer: Optimizer, total_steps: int, *, min_lr_ratio: float = 0.0, **warmup):
        self.min_lr_ratio = _number("min_lr_ratio", min_lr_ratio, 0, 1)
        super().__init__(optimizer, total_steps, **warmup)

    def decay(self, progress: float) -> float:
        return _cos(1.0, self.min_lr_ratio, progress)


class WarmupStep(Schedule):
    """Warm-up, then multiply by `gamma` at each milestone (fractions of the post-warm-up steps)."""

    def __init__(self, optimizer: Optimizer, total_steps: int, *, milestones: tuple[float, ...] = (0.7, 0.9),
                 gamma: float = 0.1, **warmup):
        if isinstance(milestones, (int, float)) or not all(
                isinstance(m, (int, float)) and not isinstance(m, bool) and 0 < m < 1 for m in milestones):
            raise ConfigError(f"schedule.milestones are fractions of the post-warm-up steps in (0, 1), got "
                              f"{milestones!r}")
        self.milestones, self.gamma = sorted(milestones), _number("gamma", gamma, 0, 1, low_open=True)
        super().__init__(optimizer, total_steps, **warmup)

    def decay(self, progress: float) -> float:
        return self.gamma ** sum(progress >= m for m in self.milestones)


class WarmupExponential(Schedule):
    """Warm-up, then lr x final_ratio ** progress: an exponential decay spread over the steps. A per-epoch decay by
    gamma over E epochs (torch's StepLR(step_size=1, gamma), 4DMOS's and InsMOS's 0.99) is final_ratio = gamma ** E,
    here continuous instead of in E steps."""

    def __init__(self, optimizer: Optimizer, total_steps: int, *, final_ratio: float = 0.1, **warmup):
        self.final_ratio = _number("final_ratio", final_ratio, 0, 1, low_open=True)
        super().__init__(optimizer, total_steps, **warmup)

    def decay(self, progress: float) -> float:
        return self.final_ratio ** progress


class OneCycle(Schedule):
    """One-cycle lr and momentum (OpenPCDet's adam_onecycle); the optimizer's lr is max_lr.

    No separate warm-up: the first `pct_start` of training is the rise."""

    def __init__(self, optimizer: Optimizer, total_steps: int, *, pct_start: float = 0.4, div_factor: float = 10.0,
                 final_div_factor: float = 1e4, moms: tuple[float, float] | None = (0.95, 0.85)):
        self.pct_start = _number("pct_start", pct_start, 0, 1, low_open=True)
        self.div_factor = _number("div_factor", div_factor, 0, math.inf, low_open=True, high_open=True)
        self.final_div_factor = _number("final_div_factor", final_div_factor, 0, math.inf, low_open=True,
                                        high_open=True)
        if moms is not None and (isinstance(moms, (int, float)) or len(moms) != 2):
            raise ConfigError(f"schedule.moms must be two momenta (high, low) or null, got {moms!r}")
        self.moms = None if moms is None else tuple(_number("moms", m, 0, 1, high_open=True) for m in moms)
        super().__init__(optimizer, total_steps)

    def _progress(self, step: int) -> tuple[float, bool]:
        rise = max(int(self.pct_start * self.total_steps), 1)  # int(), as OpenPCDet's (fastai's) OneCycle
        if step < rise:
            return step / rise, True
        return (step - rise) / max(self.total_steps - rise, 1), False

    def factor(self, step: int) -> float:
        t, rising = self._progress(step)
        low = 1 / self.div_factor
        return _cos(low, 1.0, t) if rising else _cos(1.0, low / self.final_div_factor, t)

    def momentum(self, step: int) -> float | None:
        if self.moms is None:
            return None
        t, rising = self._progress(step)
        high, low = self.moms
        return _cos(high, low, t) if rising else _cos(low, high, t)

    def _apply(self) -> None:
        super()._apply()
        m = self.momentum(self.step_count)
        if m is None:
            return
        for group in self.optimizer.param_groups:
            if "betas" in group:
                group["betas"] = (m, *group["betas"][1:])
            elif "momentum" in group:
                group["momentum"] = m
