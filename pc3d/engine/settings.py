"""The `train:` settings of a run (configs/config.yaml's `train:` node), checked when built: types and ranges,
with a ConfigError naming `train.<key>`."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from pc3d.errors import ConfigError


@dataclass
class TrainSettings:
    """The `train:` node of the config. Intervals count epochs when `max_epochs` is set and steps
    when `max_iters` is; 0 disables the periodic action (the end of training still evaluates and saves)."""

    max_epochs: int | None = None
    max_iters: int | None = None
    batch_size: int = 8                 # per process
    val_batch_size: int | None = None   # None: batch_size
    workers: int = 0
    accumulate: int = 1
    clip_grad_norm: float | None = None
    max_nonfinite_steps: int = 10       # steps in a row skipped for NaN / inf gradients before the run stops
    precision: str = "fp32"             # fp32 | bf16 | fp16 (CUDA)
    ema_decay: float | None = None      # e.g. 0.999; evaluation then uses the EMA weights
    ema_warmup_steps: int = 0
    eval_interval: int | None = None    # None: once per epoch (an epoch's steps under max_iters); 0: at the end
    ckpt_interval: int | None = None
    log_interval: int = 20
    keep_last: int = 3
    best_metric: str | None = None      # metric deciding best.pt, e.g. "accuracy"
    best_mode: str = "max"
    sync_bn: bool = False
    find_unused_parameters: bool = False
    tensorboard: bool = True
    plain_last_epochs: int = 0          # the last N epochs load training frames without augmentation (DSVT's last one)

    def __post_init__(self):
        self._check_types()
        if (self.max_epochs is None) == (self.max_iters is None):
            raise ConfigError("set exactly one of train.max_epochs and train.max_iters, got "
                              f"max_epochs={self.max_epochs}, max_iters={self.max_iters} (to switch on the command "
                              "line: train.max_epochs=null train.max_iters=N)")
        self._check_ranges()

    def _check_ranges(self) -> None:
        """ConfigError naming train.<key> for a value of the right type outside its range."""
        at_least = {"max_epochs": 1, "max_iters": 1, "batch_size": 1, "val_batch_size": 1, "accumulate": 1,
                    "log_interval": 1, "keep_last": 1, "workers": 0, "ema_warmup_steps": 0, "eval_interval": 0,
                    "ckpt_interval": 0, "max_nonfinite_steps": 0,
                    "plain_last_epochs": 0}
        for name, low in at_least.items():
            value = getattr(self, name)
            if value is not None and value < low:
                raise ConfigError(f"train.{name} must be >= {low}, got {value}")
        choices = {"precision": ("fp32", "bf16", "fp16"), "best_mode": ("max", "min")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"train.{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        if self.clip_grad_norm is not None and not (math.isfinite(self.clip_grad_norm) and self.clip_grad_norm > 0):
            raise ConfigError(f"train.clip_grad_norm must be a finite number > 0 or null, got {self.clip_grad_norm}")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise ConfigError(f"train.ema_decay must be in [0, 1) or null, got {self.ema_decay}")

    def _check_types(self) -> None:
        """ConfigError naming train.<key> when a value has the wrong type (e.g. max_epochs=abc)."""
        kinds = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}
        for name, spec in self.__dataclass_fields__.items():
            value = getattr(self, name)
            base, _, optional = str(spec.type).partition(" | ")
            if base not in kinds or (value is None and optional == "None"):
                continue
            ok = isinstance(value, kinds[base]) and not (base in ("int", "float") and isinstance(value, bool))
            if not ok:
                raise ConfigError(f"train.{name} must be {'an' if base == 'int' else 'a'} {base}"
                                  f"{' or null' if optional == 'None' else ''}, got {value!r}")

    @classmethod
    def from_config(cls, node: Mapping) -> TrainSettings:
        """From the `train:` config node; unknown keys are a ConfigError naming them."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(node) - known)
        if unknown:
            raise ConfigError(f"unknown train settings {unknown}; known: {sorted(known)}")
        return cls(**node)

    @property
    def by_epochs(self) -> bool:
        return self.max_epochs is not None
