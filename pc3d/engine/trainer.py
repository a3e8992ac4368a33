"""The training loop: epochs or iterations, accumulation, clipping, mixed precision, EMA, periodic
evaluation, best-checkpoint tracking, exact resume and a clean stop on SIGINT / SIGTERM.

Contract with models: `model(batch)` in train mode returns a dict with a scalar `loss` (what is
optimised) and any other scalar terms (logged as `train/<name>`); in eval mode see
pc3d.engine.evaluator. Batches come from pc3d.engine.data (the dataset's `collate_fn`) and are
moved to the device with `to_device`.

Counting. A *step* is one optimizer step (= `accumulate` micro-batches); schedules, logging,
`max_iters` and `eval_interval` / `ckpt_interval` (in steps when `max_iters` is set, in epochs when
`max_epochs` is; null: once per epoch, which under `max_iters` is an epoch's steps) count steps. An
epoch has `len(loader) // accumulate` steps; leftover micro-batches of an epoch are skipped.

Per-step cost is kept small: no host-device synchronisation except every `log_interval` steps
(loss terms are summed on the device in between), no per-step Python beyond the loop itself.

Stopping. SIGINT / SIGTERM set a flag; at the next step boundary (under DDP at the next
`log_interval` boundary, after the ranks agree) the trainer saves a checkpoint and returns with
`interrupted=True`. Resuming from it (`resume=<file or run dir>`) continues bit for bit on the same thread
count (recorded in the checkpoint; torch's dense layers sum in another order on another count: a warning).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import Dataset

from pc3d.engine import distributed
from pc3d.engine.checkpoint import CheckpointManager, load_checkpoint, resolve_checkpoint
from pc3d.engine.data import EpochBatchSampler, stop_augmenting, to_device, train_loader
from pc3d.engine.ema import ModelEMA
from pc3d.engine.evaluator import Evaluator, evaluate
from pc3d.engine.monitor import Progress, ScalarWriter, flatten_metrics, write_json
from pc3d.engine.optim import autocast, clip_gradients, grad_scaler, param_groups, resolve_precision
from pc3d.engine.schedule import Schedule
from pc3d.engine.seeding import rng_state, seed_everything, set_rng_state
from pc3d.engine.settings import TrainSettings
from pc3d.engine.signals import StopRequest
from pc3d.errors import CheckpointError, ConfigError, TrainingError

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    step: int
    epoch: int
    interrupted: bool = False
    signal: int | None = None
    last_checkpoint: Path | None = None
    best: dict = field(default_factory=dict)
    final_metrics: dict | None = None


OptimizerFactory = Callable[[list], Optimizer]
ScheduleFactory = Callable[..., Schedule]


class Trainer:
    """Trains `model` on `train_set`; all outputs go to `run_dir` (rank 0 writes).

    optimizer: partial taking parameter groups (e.g. `functools.partial(torch.optim.AdamW, lr=1e-3)`).
    schedule: partial taking (optimizer, total_steps=...) or None (constant lr).
    config: the resolved run config (plain dict) stored in every checkpoint.
    """

    def __init__(self, model: nn.Module, train_set: Dataset, *, optimizer: OptimizerFactory,
                 settings: TrainSettings, run_dir: str | Path, schedule: ScheduleFactory | None = None,
                 val_set: Dataset | None = None, evaluator: Evaluator | None = None,
                 info: distributed.DistInfo | None = None, seed: int = 0, config: Mapping | None = None):
        self.info = info or distributed.DistInfo(device=distributed.resolve_device("auto"))
        self.s = settings = replace(settings, precision=resolve_precision(settings.precision, self.info.device))
        self.run_dir = Path(run_dir)
        self.train_set, self.val_set, self.evaluator = train_set, val_set, evaluator
        self.seed, self.config = seed, dict(config or {})
        self.model = distributed.wrap_model(model, self.info, sync_bn=settings.sync_bn,
                                            find_unused_parameters=settings.find_unused_parameters)
        self.net = distributed.unwrap(self.model)
        self.optimizer = optimizer(param_groups(self.net))
        self._lr = self.optimizer.param_groups[0]["lr"]  # the lr of the last step run (what _log reports)
        self.scaler = grad_scaler(settings.precision, self.info.device)
        self.skipped_steps, self._nonfinite_run = 0, 0  # steps skipped for NaN / inf gradients: in all, in a row
        self.ema = ModelEMA(self.net, settings.ema_decay, settings.ema_warmup_steps) if settings.ema_decay else None
        self.sampler = EpochBatchSampler(len(train_set), settings.batch_size, shuffle=True, seed=seed,
                                         rank=self.info.rank, world_size=self.info.world_size)
        self.steps_per_epoch = len(self.sampler) // settings.accumulate
        if self.steps_per_epoch < 1:
            raise ConfigError(f"{len(train_set)} training samples make no full step of batch_size="
                              f"{settings.batch_size} x accumulate={settings.accumulate} x "
                              f"{self.info.world_size} processes")
        self.total_steps = settings.max_iters or settings.max_epochs * self.steps_per_epoch
        self.total_epochs = math.ceil(self.total_steps / self.steps_per_epoch)  # the last one partial under max_iters
        if settings.plain_last_epochs:
            stop_augmenting(train_set, self.total_epochs, settings.plain_last_epochs)
        self.schedule = schedule(self.optimizer, total_steps=self.total_steps) if schedule else None
        self.loader = train_loader(train_set, self.sampler, workers=settings.workers,
                                   pin_memory=self.info.device.type == "cuda")
        self.ckpt = CheckpointManager(self.run_dir / "checkpoints", keep_last=settings.keep_last,
                                      best_metric=settings.best_metric, mode=settings.best_mode)
        self.step = self.epoch = self.batch_in_epoch = 0
        self.history: list[dict] = []
        self.last_checkpoint: Path | None = None
        self._saved_step = self._evaluated_step = -1

    # ---------------------------------------------------------------- state

    def state_dict(self) -> dict:
        """Everything a resume needs (the RNG states of all ranks are gathered; call on every rank)."""
        return {
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict() if self.schedule else None,
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "rng": distributed.all_gather_objects(rng_state()),
            "progress": {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "step": self.step,
                         "seed": self.seed, "world_size": self.info.world_size,
                         "total_steps": self.total_steps, "threads": torch.get_num_threads()},
            "config": self.config,
        }

    def load_state_dict(self, ckpt: Mapping, source: Path | str = "checkpoint") -> None:
        configured = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        try:
            self.net.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{source}: does not fit this model / optimizer: {exc}") from exc
        saved = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        for group, settings in zip(self.optimizer.param_groups, configured, strict=True):
            group.update(settings)  # this run's optim settings apply (the schedule, if any, then sets lr)
        if self.schedule and ckpt.get("scheduler"):
            self.schedule.load_state_dict(ckpt["scheduler"])
        changed = sorted({k for before, group in zip(saved, self.optimizer.param_groups, strict=True)
                          for k, v in before.items() if k not in ("lr", "initial_lr") and group.get(k) != v})
        if not self.schedule and any(b.get("lr") != g["lr"] for b, g in zip(saved, self.optimizer.param_groups,
                                                                            strict=True)):
            changed.append("lr")
        if changed:
            log.warning("%s was trained with other optim settings (%s): this run's config applies from here",
                        source, ", ".join(changed))
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None:
            if ckpt.get("ema"):
                self.ema.load_state_dict(ckpt["ema"])
            else:
                self.ema = ModelEMA(self.net, self.s.ema_decay, self.s.ema_warmup_steps)
        p = ckpt["progress"]
        self.epoch, self.batch_in_epoch, self.step = int(p["epoch"]), int(p["batch_in_epoch"]), int(p["step"])
        if p.get("total_steps", self.total_steps) != self.total_steps:
            log.warning("%s belongs to a run of %s steps, this one has %d (max_epochs / max_iters, batch size or "
                        "accumulate changed): its schedule is stretched from here", source, p["total_steps"],
                        self.total_steps)
        if p.get("seed") != self.seed:
            log.warning("%s was trained with seed %s, this run has seed %s", source, p.get("seed"), self.seed)
        if p.get("threads", torch.get_num_threads()) != torch.get_num_threads():
            log.warning("%s was trained on %s threads, this run has %d: sums are taken in another order, so the "
                        "run continues, but not bit for bit", source, p["threads"], torch.get_num_threads())
        rng = ckpt.get("rng") or []
        if len(rng) == self.info.world_size:
            set_rng_state(rng[self.info.rank])
        else:
            log.warning("%s was written by %d processes, this run has %d: reseeding instead of restoring RNG "
                        "states (the run continues, but not bit for bit)", source, len(rng), self.info.world_size)
            seed_everything(self.seed + 1000003 * self.step + self.info.rank)
        self.ckpt.load_best_state(ckpt.get("best"))
        self._saved_step = self.step
        if ckpt.get("metrics"):  # saved with an evaluation of this step: resuming does not repeat it
            self._evaluated_step = self.step

    def resume(self, path: str | Path) -> None:
        """Continue from checkpoint `path` (or a run dir's newest), in this run dir or another: the evaluation
        history and best.pt up to its step come along from the run that saved it; saves of later steps in this
        run dir are set aside (CheckpointManager.continue_from)."""
        path = resolve_checkpoint(path)
        self.load_state_dict(load_checkpoint(path), path)
        source = path.parent.parent if path.parent.name == "checkpoints" else self.run_dir
        metrics_file = source / "metrics.json"
        if metrics_file.is_file():
            old = json.loads(metrics_file.read_text()).get("history", [])
            self.history = [h for h in old if h.get("step", 0) <= self.step]
        if self.info.is_main:
            self.ckpt.continue_from(path, self.step)
        log.info("resumed from %s at step %d (epoch %d)", path, self.step, self.epoch)

    # ---------------------------------------------------------------- loop

    def fit(self, resume: str | Path | None = None) -> TrainResult:
        """Train until max_epochs / max_iters or a stop signal; returns where it stopped."""
        if resume is not None:
            self.resume(resume)
        else:
            seed_everything(self.seed + self.info.rank)
        main = self.info.is_main
        writer = ScalarWriter(self.run_dir / "tb", self.s.tensorboard and main)
        progress = Progress(self.total_steps, self.step, main)
        if main:
            log.info("training %s: %d steps (%d per epoch), %s, %d process(es) of %d thread(s), device %s, "
                     "run dir %s", type(self.net).__name__, self.total_steps, self.steps_per_epoch, self.cadence(),
                     self.info.world_size, torch.get_num_threads(), self.info.device, self.run_dir)
            if self.s.plain_last_epochs:
                log.info("epochs %d-%d load training frames without augmentation (train.plain_last_epochs=%d)",
                         self.total_epochs - self.s.plain_last_epochs, self.total_epochs - 1, self.s.plain_last_epochs)
            for warning in self.crowded_intervals():
                log.warning(warning)
        self.model.train()
        stop = StopRequest()
        try:
            with stop:  # also over the final evaluation and save: a signal then waits for them
                self._loop(stop, progress, writer)
                progress.close()
                interrupted = stop.requested and self.step < self.total_steps
                if not interrupted:
                    self._finish(writer)
        finally:
            progress.close()
            writer.close()
        if interrupted and main:
            log.warning("stopped by signal %d at step %d; saved %s — resume with resume=%s", stop.signum,
                        self.step, self.last_checkpoint, self.run_dir)
        final = self.history[-1] if self.history and not interrupted else None
        return TrainResult(self.step, self.epoch, interrupted, stop.signum, self.last_checkpoint,
                           self.ckpt.best_state(), final)

    def _loop(self, stop: StopRequest, progress: Progress, writer: ScalarWriter) -> None:
        s, dev = self.s, self.info.device
        move = dev.type != "cpu"
        batches_per_epoch = self.steps_per_epoch * s.accumulate
        sums: dict[str, torch.Tensor] = {}
        count, t_log, step_log = 0, time.perf_counter(), self.step
        # resumed where a stop saved: the evaluation / save due there, which the stop came before
        if s.by_epochs and self.batch_in_epoch >= batches_per_epoch:
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            self._periodic(self.epoch, writer)
        elif not s.by_epochs and self.step > 0:
            self._periodic(self.step, writer)
        while self.step < self.total_steps:
            if self.batch_in_epoch >= batches_per_epoch:
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            self.sampler.set_epoch(self.epoch, self.batch_in_epoch)
            micro, finite = 0, torch.ones((), dtype=torch.bool)
            for batch in self.loader:
                if move:
                    batch = to_device(batch, dev)
                micro += 1
                sync = micro == s.accumulate
                if micro == 1:  # what a skipped step puts back (batch-norm statistics)
                    buffers = [b.detach().clone() for b in self.net.buffers()]
                ctx = self.model.no_sync() if self.info.distributed and not sync else contextlib.nullcontext()
                with ctx:
                    with autocast(s.precision, dev):
                        out = self.model(batch)
                    loss = out["loss"] if isinstance(out, Mapping) and "loss" in out else self._no_loss(out)
                    ok = torch.isfinite(loss.detach())  # the step's loss is finite: all its micro-batches'
                    finite = ok if micro == 1 else finite & ok
                    self.scaler.scale(loss / s.accumulate if s.accumulate > 1 else loss).backward()
                for k, v in out.items():
                    if isinstance(v, torch.Tensor) and v.ndim == 0:
                        v = v.detach()
                        sums[k] = sums[k] + v if k in sums else v
                count += 1
                self.batch_in_epoch += 1
                if not sync:
                    continue
                micro = 0
                norm = None
                if s.clip_grad_norm:
                    self.scaler.unscale_(self.optimizer)
                    norm = clip_gradients(self.net.parameters(), s.clip_grad_norm)
                stepped = self._optimizer_step(norm, finite, batch, buffers)
                self.optimizer.zero_grad(set_to_none=True)
                self._lr = self.optimizer.param_groups[0]["lr"]  # the step's own lr, logged with its loss
                if self.schedule is not None:
                    self.schedule.step()
                if stepped and callable(after := getattr(self.net, "after_optimizer_step", None)):
                    after()  # the model contract's hook: once per applied step (a mean teacher's EMA teacher)
                if self.ema is not None and stepped:
                    self.ema.update(self.net)
                self.step += 1
                progress.update()
                at_log = self.step % s.log_interval == 0 or self.step == self.total_steps
                if at_log:
                    now = time.perf_counter()
                    self._log(sums, count, (self.step - step_log) / max(now - t_log, 1e-9), progress, writer)
                    sums, count, t_log, step_log = {}, 0, now, self.step
                stopping = stop.requested if not self.info.distributed else (
                    at_log and distributed.any_rank(stop.requested, dev))
                if stopping:
                    stop.signum = stop.signum or 15
                    self.save()
                    return
                if not s.by_epochs:
                    self._periodic(self.step, writer)
                if self.step >= self.total_steps or self.batch_in_epoch >= batches_per_epoch:
                    break
            if self.batch_in_epoch >= batches_per_epoch and s.by_epochs:
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                self._periodic(self.epoch, writer)

    def _optimizer_step(self, norm: torch.Tensor | None, finite_loss: torch.Tensor, batch: Any,
                        buffers: list[torch.Tensor]) -> bool:
        """Step the optimizer unless a gradient holds NaN / inf (the global norm `norm`, computed here when
        clipping did not); False when the step is skipped. A skipped step leaves the weights, optimizer state and
        EMA as they were and puts the buffers (batch-norm statistics) back to `buffers`, their values before the
        step. Under DDP every process sees the same averaged gradients, so all skip together.

        fp16: GradScaler skips a step whose scaled gradients overflowed and lowers its scale; that is how it finds
        its scale, so it is not counted. A skipped step whose loss was not finite (`finite_loss`: all of the
        step's micro-batches') is: a warning names the batch's frames, and more than max_nonfinite_steps such
        steps in a row are a TrainingError."""
        if self.scaler.is_enabled():
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.scaler.get_scale() >= scale:
                self._nonfinite_run = 0
                return True
            self._put_back(buffers)
            if bool(finite_loss):
                return False
            return self._skipped(batch, "the loss is not finite")
        if norm is None:
            grads = [p.grad for p in self.net.parameters() if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
        if bool(torch.isfinite(norm)):
            self._nonfinite_run = 0
            self.optimizer.step()
            return True
        self._put_back(buffers)
        return self._skipped(batch, f"gradients are not finite (norm {float(norm)})")

    def _put_back(self, buffers: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for b, before in zip(self.net.buffers(), buffers, strict=True):
                b.copy_(before)

    def _skipped(self, batch: Any, why: str) -> bool:
        """Count a step skipped for `why`, warn naming the batch's frames, and raise a TrainingError when more than
        max_nonfinite_steps were in a row; False (not stepped)."""
        self._nonfinite_run += 1
        self.skipped_steps += 1
        frames = batch.get("frame_id") if isinstance(batch, Mapping) else None
        named = f" (this process's batch: {', '.join(map(str, list(frames)[:8]))})" if frames is not None else ""
        log.warning("step %d: %s; the step is skipped, the weights stay as they were%s", self.step + 1, why, named)
        if self._nonfinite_run > self.s.max_nonfinite_steps:
            first = self.step + 2 - self._nonfinite_run
            raise TrainingError(f"gradients were not finite for {self._nonfinite_run} steps in a row (steps "
                                f"{first}-{self.step + 1}; train.max_nonfinite_steps={self.s.max_nonfinite_steps}): "
                                "the weights stay at step "
                                f"{first - 1}'s (last checkpoint: {self.last_checkpoint}); try a lower optim.lr, "
                                "train.clip_grad_norm, or check the frames the warnings name")
        return False

    @staticmethod
    def _no_loss(out: Any):
        raise ConfigError(f"a model in train mode must return a dict with a scalar 'loss', got {type(out).__name__}"
                          + (f" with keys {sorted(out)}" if isinstance(out, Mapping) else ""))

    def _periodic(self, count: int, writer: ScalarWriter) -> None:
        """Evaluate / save when `count` (epochs or steps) hits an interval (not at the very end: _finish does),
        unless this step was already evaluated / saved (the checkpoint a run resumes from)."""
        if self.step >= self.total_steps:
            return
        metrics, evaluated = None, False  # metrics: rank 0's; `evaluated` is the same on every rank
        eval_every, save_every = self.interval(self.s.eval_interval), self.interval(self.s.ckpt_interval)
        if (self.val_set is not None and eval_every and count % eval_every == 0
                and self._evaluated_step != self.step):
            metrics, evaluated = self.run_eval(writer), True
        if save_every and count % save_every == 0 and (self._saved_step != self.step or evaluated):
            self.save(metrics)

    def interval(self, setting: int | None) -> int:
        """An eval / checkpoint interval in the unit `_periodic` counts (epochs or steps); None is once per epoch."""
        if setting is not None:
            return setting
        return 1 if self.s.by_epochs else self.steps_per_epoch

    def cadence(self) -> str:
        """When the run evaluates and saves, in steps: "evaluation every 840 steps, a checkpoint every 105 steps"
        (the start line of the log, where an interval meant in epochs but counted in steps shows)."""
        def every(setting: int | None, what: str) -> str:
            n = self.interval(setting) * (self.steps_per_epoch if self.s.by_epochs else 1)
            return f"{what} every {n} step{'s' if n != 1 else ''}" if 0 < n < self.total_steps else f"{what} at the end"

        parts = [every(self.s.eval_interval, "evaluation")] if self.val_set is not None else ["no evaluation"]
        return ", ".join(parts + [every(self.s.ckpt_interval, "a checkpoint")])

    def crowded_intervals(self, most: int = 50) -> list[str]:
        """A warning for each interval set in steps that makes more than `most` evaluations or checkpoints: an
        interval meant in epochs (a recipe's ``ckpt_interval: 1``) counts steps once max_iters replaces
        max_epochs on the command line, and a quick run then spends its time evaluating or saving."""
        if self.s.by_epochs:
            return []
        settings = [("eval_interval", self.s.eval_interval, "evaluations")] if self.val_set is not None else []
        settings.append(("ckpt_interval", self.s.ckpt_interval, "checkpoints"))
        return [f"train.{key}={every} counts steps under max_iters: {self.total_steps // every} {what} in "
                f"{self.total_steps} steps (was it meant in epochs?)"
                for key, every, what in settings if every and self.total_steps // every > most]

    def _finish(self, writer: ScalarWriter) -> None:
        """The final evaluation and save. The weights are saved first: a run killed during a long evaluation
        (a second Ctrl-C, SLURM's SIGKILL after its grace time) keeps them."""
        metrics, evaluated = None, False  # metrics: rank 0's; `evaluated` is the same on every rank
        if self.val_set is not None and self._evaluated_step != self.step:
            if self._saved_step != self.step:
                self.save()
            metrics, evaluated = self.run_eval(writer), True
        if self._saved_step != self.step or evaluated:
            self.save(metrics)
        if self.info.is_main:
            log.info("finished at step %d; best %s", self.step, self.ckpt.best_state())
            if self.skipped_steps:
                log.warning("%d step(s) were skipped for non-finite gradients (listed above)", self.skipped_steps)

    def _log(self, sums: dict, count: int, its: float, progress: Progress, writer: ScalarWriter) -> None:
        if not sums or not self.info.is_main:
            return
        values = dict(zip(sums, (torch.stack(list(sums.values())).float() / count).tolist(), strict=True))
        lr = self._lr
        eta = (self.total_steps - self.step) / max(its, 1e-9)
        progress.show(loss=values.get("loss", math.nan), lr=lr)
        terms = " ".join(f"{k}={v:.4g}" for k, v in values.items())
        log.info("step %d/%d epoch %d: %s lr=%.3g %.2f it/s eta %s", self.step, self.total_steps, self.epoch, terms,
                 lr, its, _hms(eta))
        if not all(math.isfinite(v) for v in values.values()):
            log.warning("non-finite loss at step %d: %s", self.step, values)
        writer.add({**{f"train/{k}": v for k, v in values.items()}, "train/lr": lr, "train/it_per_s": its},
                   self.step)

    # ---------------------------------------------------------------- eval and save

    def eval_model(self) -> nn.Module:
        """The weights evaluation uses: the EMA copy when EMA is on."""
        return self.ema.model if self.ema is not None else self.net

    def run_eval(self, writer: ScalarWriter | None = None) -> dict | None:
        """Evaluate on the validation set (all ranks); metrics on rank 0, None elsewhere."""
        metrics, _ = evaluate(self.eval_model(), self.val_set, batch_size=self.s.val_batch_size or self.s.batch_size,
                              workers=self.s.workers, info=self.info, precision=self.s.precision,
                              evaluator=self.evaluator, seed=self.seed)
        self._evaluated_step = self.step
        self.model.train()
        if metrics is None:
            return None
        flat = flatten_metrics(metrics)
        if self.s.best_metric and self.s.best_metric not in flat:
            log.warning("train.best_metric=%r is not among this evaluation's metrics, so it cannot choose best.pt: "
                        "%s", self.s.best_metric, ", ".join(sorted(flat)))
        self.history.append({"step": self.step, "epoch": self.epoch, **flat})
        log.info("eval at step %d: %s", self.step, " ".join(f"{k}={v:.4g}" for k, v in flat.items()))
        if writer is not None:
            writer.add({f"val/{k}": v for k, v in flat.items()}, self.step)
            writer.flush()
        return flat

    def save(self, metrics: Mapping[str, float] | None = None) -> Path | None:
        """Checkpoint now (all ranks call; rank 0 writes) and update metrics.json."""
        state = self.state_dict()
        path = None
        if self.info.is_main:
            path = self.ckpt.save(state, self.step, metrics)
            self.last_checkpoint = path
            write_json(self.run_dir / "metrics.json", {
                "history": self.history, "best": self.ckpt.best_state(),
                "final": self.history[-1] if self.history else None, "step": self.step, "epoch": self.epoch,
                "settings": asdict(self.s)})
        self._saved_step = self.step
        distributed.barrier()
        return path


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
