"""The trainer on the toy model: loss falls, exact resume, DDP == one process, SIGTERM saves."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from trainer_helpers import free_port, make_trainer, one_thread, params, poisoned_trainer  # noqa: F401 (autouse fixture)

from pc3d.data.dataset import PointCloudDataset
from pc3d.data.toy import ToyShapes
from pc3d.engine import distributed, optim
from pc3d.engine.checkpoint import load_checkpoint
from pc3d.engine.ema import ModelEMA
from pc3d.engine.schedule import WarmupCosine
from pc3d.engine.seeding import seed_everything
from pc3d.engine.settings import TrainSettings
from pc3d.engine.trainer import Trainer
from pc3d.errors import ConfigError
from pc3d.models.toy import ToyPointNet
from pc3d.voxel import grid_sample

ROOT = Path(__file__).resolve().parents[1]


def test_toy_model_overfits(tmp_path):
    trainer = make_trainer(tmp_path, max_iters=80, train_size=16, augment=False, log_interval=40, dropout=0.0)
    losses = []
    forward = trainer.net.forward

    def spy(batch):
        out = forward(batch)
        if trainer.net.training:
            losses.append(float(out["loss"].detach()))
        return out

    trainer.net.forward = spy
    result = trainer.fit()
    assert result.step == 80 and not result.interrupted
    assert sum(losses[-4:]) / 4 < 0.2 * sum(losses[:4]) / 4
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "checkpoints" / "step_00000080.pt").is_file()


def test_default_intervals_are_once_per_epoch_in_either_unit(tmp_path):
    """eval_interval / ckpt_interval left null: a max_iters run saves (and evaluates) every epoch's steps, not
    every step; a max_epochs run every epoch. 64 samples / batch 8 = 8 steps per epoch."""
    iters = make_trainer(tmp_path / "iters", max_iters=20, eval_interval=None, ckpt_interval=None, keep_last=10)
    evaluated, run_eval = [], iters.run_eval
    iters.run_eval = lambda writer: evaluated.append(iters.step) or run_eval(writer)
    iters.fit()
    saved = sorted(p.name for p in (tmp_path / "iters" / "checkpoints").glob("step_*.pt"))
    assert saved == ["step_00000008.pt", "step_00000016.pt", "step_00000020.pt"]  # the last one: the end
    assert evaluated == [8, 16, 20]
    epochs = make_trainer(tmp_path / "epochs", max_iters=None, max_epochs=2, eval_interval=None, ckpt_interval=None)
    epochs.fit()
    saved = sorted(p.name for p in (tmp_path / "epochs" / "checkpoints").glob("step_*.pt"))
    assert saved == ["step_00000008.pt", "step_00000016.pt"]


def test_the_start_line_says_when_the_run_evaluates_and_saves_in_steps(tmp_path):
    """8 steps per epoch (64 samples / batch 8): intervals in epochs are shown as steps, so one meant in epochs
    but counted in steps (ckpt_interval 1 under max_iters) shows as "every 1 step"."""
    assert make_trainer(tmp_path / "a", max_iters=None, max_epochs=4, eval_interval=2, ckpt_interval=None).cadence() \
        == "evaluation every 16 steps, a checkpoint every 8 steps"
    assert make_trainer(tmp_path / "b", max_iters=40, eval_interval=0, ckpt_interval=1).cadence() \
        == "evaluation at the end, a checkpoint every 1 step"
    assert make_trainer(tmp_path / "c", max_iters=40, eval_interval=40, ckpt_interval=None).cadence() \
        == "evaluation at the end, a checkpoint every 8 steps"

    crowded = make_trainer(tmp_path / "d", max_iters=400, eval_interval=5, ckpt_interval=1).crowded_intervals()
    assert crowded == ["train.eval_interval=5 counts steps under max_iters: 80 evaluations in 400 steps (was it "
                       "meant in epochs?)", "train.ckpt_interval=1 counts steps under max_iters: 400 checkpoints in "
                       "400 steps (was it meant in epochs?)"]
    assert make_trainer(tmp_path / "e", max_iters=400, eval_interval=8, ckpt_interval=0).crowded_intervals() == []
    assert make_trainer(tmp_path / "f", max_iters=None, max_epochs=80, eval_interval=1,
                        ckpt_interval=1).crowded_intervals() == []  # epochs: as meant


RESUME_CASES = {
    "iters": ({"max_iters": 12, "ckpt_interval": 6}, 6, 1),            # mid-epoch: 8 steps per epoch
    "iters_2_workers": ({"max_iters": 12, "ckpt_interval": 6, "workers": 2}, 6, 1),
    "epochs": ({"max_iters": None, "max_epochs": 2, "ckpt_interval": 1}, 8, 2),
    "accumulate_ema_clip_bf16": ({"max_iters": 8, "ckpt_interval": 4, "accumulate": 2, "ema_decay": 0.9,
                                  "clip_grad_norm": 0.5, "precision": "bf16"}, 4, 1),
}


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_exact_resume_is_bitwise(tmp_path, case, monkeypatch):
    """N steps + checkpoint + resume + N steps == 2N steps straight (with dropout, augmentation and evaluation)."""
    monkeypatch.setenv(optim.ENV_BF16, "force")  # the bf16 case runs bf16 on any CPU
    settings, step, epoch = RESUME_CASES[case]
    straight = make_trainer(tmp_path / "straight", eval_interval=4, **{**settings, "ckpt_interval": 0})
    straight.fit()
    saving = make_trainer(tmp_path / "saving", eval_interval=4, keep_last=5, **settings)
    saving.fit()
    resumed = make_trainer(tmp_path / "resumed", eval_interval=4, **settings)
    result = resumed.fit(resume=tmp_path / "saving" / "checkpoints" / f"step_{step:08d}.pt")
    assert result.step == straight.step == 2 * step and resumed.epoch == epoch
    for a, b, c in zip(params(straight), params(saving), params(resumed), strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)
    opt_a, opt_c = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(opt_a[k]["exp_avg_sq"], opt_c[k]["exp_avg_sq"]) for k in opt_a)
    if straight.ema is not None:
        for a, c in zip(straight.ema.model.parameters(), resumed.ema.model.parameters(), strict=True):
            assert torch.equal(a, c)


def test_resume_on_another_thread_count_says_it_is_not_bitwise(tmp_path, caplog):
    """Sums over threads are taken in another order on another thread count (a float32 CenterPoint run on one
    thread and on two drifts from the first step), so a checkpoint records its threads and a resume on a
    different count warns; on the same count it does not."""
    from pc3d.engine import trainer as trainer_module

    make_trainer(tmp_path / "saving", max_iters=4, ckpt_interval=2).fit()
    ckpt = tmp_path / "saving" / "checkpoints" / "step_00000002.pt"
    assert load_checkpoint(ckpt)["progress"]["threads"] == torch.get_num_threads()
    before = torch.get_num_threads()
    for threads, warned in ((before, False), (before + 1, True)):
        caplog.clear()
        torch.set_num_threads(threads)
        try:
            with caplog.at_level(logging.WARNING, logger=trainer_module.__name__):
                make_trainer(tmp_path / f"resumed_{threads}", max_iters=4).fit(resume=ckpt)
        finally:
            torch.set_num_threads(before)
        assert ("not bit for bit" in caplog.text) == warned, caplog.text


def test_bf16_runs_float32_on_a_cpu_without_bf16_instructions(tmp_path, monkeypatch, caplog):
    """train.precision=bf16 on a CPU that cannot multiply bf16 trains in float32 and says so; PC3D_BF16=force
    and a CPU with the instructions keep bf16."""
    cpu = torch.device("cpu")
    monkeypatch.delenv(optim.ENV_BF16, raising=False)
    monkeypatch.setattr(optim, "cpu_multiplies_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger=optim.__name__):
        assert optim.resolve_precision("bf16", cpu) == "fp32"
    assert "no bf16 instructions" in caplog.text
    assert make_trainer(tmp_path / "fallback", precision="bf16").s.precision == "fp32"
    assert optim.resolve_precision("fp32", cpu) == "fp32"
    monkeypatch.setenv(optim.ENV_BF16, "force")
    assert optim.resolve_precision("bf16", cpu) == "bf16"
    monkeypatch.delenv(optim.ENV_BF16)
    monkeypatch.setattr(optim, "cpu_multiplies_bf16", lambda: True)
    assert make_trainer(tmp_path / "native", precision="bf16").s.precision == "bf16"
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        optim.resolve_precision("fp16", cpu)


class EpochShapes(ToyShapes):
    """ToyShapes whose augmentation seed follows `set_epoch` (like PointCloudDataset with `seed=`) and whose
    loading runs a numba OpenMP kernel, as the real datasets' voxelization does inside workers."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict:
        sample = super().__getitem__(index)
        jitter = np.random.default_rng([self.epoch, index]).normal(0, 0.05, sample["points"].shape)
        sample["points"] = (sample["points"] + jitter).astype(np.float32)
        coords, *_ = grid_sample(sample["points"], 0.25)
        assert len(coords) > 0
        return sample


def _epochs_run(run_dir: Path, workers: int) -> tuple[Trainer, list[torch.Tensor]]:
    seed_everything(0)
    data = {"train_size": 24, "val_size": 8, "num_points": 32, "augment": False}
    trainer = Trainer(ToyPointNet(width=16, dropout=0.0), EpochShapes("train", **data),
                      optimizer=partial(torch.optim.AdamW, lr=1e-2), schedule=partial(WarmupCosine, warmup_steps=2),
                      settings=TrainSettings(max_epochs=3, batch_size=8, log_interval=3, eval_interval=1,
                                             ckpt_interval=1, workers=workers, tensorboard=False),
                      run_dir=run_dir, val_set=EpochShapes("val", **data), seed=0)
    result = trainer.fit()
    assert result.step == 9 and not result.interrupted
    return trainer, params(trainer)


def test_workers_cross_epochs_of_an_epoch_seeded_dataset(tmp_path):
    """Persistent workers see each epoch's `set_epoch` and survive epoch ends with evaluation between them:
    2 workers over 3 epochs train bitwise like in-process loading."""
    _, in_process = _epochs_run(tmp_path / "w0", 0)
    trainer, with_workers = _epochs_run(tmp_path / "w2", 2)
    assert trainer.loader.persistent_workers
    for a, b in zip(in_process, with_workers, strict=True):
        assert torch.equal(a, b)
    constant = EpochShapes("train", train_size=24, num_points=32, augment=False)
    assert not np.array_equal(constant[0]["points"], (constant.set_epoch(1), constant[0])[1]["points"])


def test_bad_settings_raise_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="max_epochs"):
        TrainSettings(max_epochs=1, max_iters=1)
    with pytest.raises(ConfigError, match="bogus"):
        TrainSettings.from_config({"max_iters": 1, "bogus": 1})
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        make_trainer(tmp_path, precision="fp16")
    with pytest.raises(ConfigError, match="no full step"):
        make_trainer(tmp_path, train_size=4)


def _ddp_params(out: Path, batch: int, info: distributed.DistInfo | None = None) -> list[torch.Tensor]:
    """Six SGD steps on 64 toy samples (no dropout) with per-process batch `batch`."""
    seed_everything(0)
    data = {"train_size": 64, "val_size": 16, "num_points": 32}
    trainer = Trainer(ToyPointNet(width=16, dropout=0.0), ToyShapes("train", **data),
                      optimizer=partial(torch.optim.SGD, lr=0.05, momentum=0.9),
                      schedule=partial(WarmupCosine, warmup_steps=2),
                      settings=TrainSettings(max_iters=6, batch_size=batch, log_interval=3, eval_interval=0,
                                             ckpt_interval=0, tensorboard=False),
                      run_dir=out, val_set=ToyShapes("val", **data), info=info)
    trainer.fit()
    return [p.detach().clone() for p in trainer.net.parameters()]


def _ddp_worker(rank: int, port: int, out: Path, errors) -> None:
    try:
        torch.set_num_threads(1)
        os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
                           "RANK": str(rank), "LOCAL_RANK": str(rank)})
        info = distributed.init_distributed("cpu")
        params = _ddp_params(out, 8, info)
        if info.is_main:
            torch.save(params, out / "params.pt")
        distributed.destroy()
    except BaseException as exc:  # report to the parent, which asserts
        errors.put(f"rank {rank}: {type(exc).__name__}: {exc}")
        raise


def test_ddp_two_processes_match_one(tmp_path):
    """2 gloo ranks x batch 8 == 1 process x batch 16 (same samples per step, gradients averaged)."""
    ctx = mp.get_context("fork")  # children inherit the imported torch: no second import on a busy machine
    errors = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_ddp_worker, args=(r, port, tmp_path / "ddp", errors)) for r in range(2)]
    for p in procs:
        p.start()
    one = _ddp_params(tmp_path / "one", 16)
    for p in procs:
        p.join(timeout=120)
    assert all(p.exitcode == 0 for p in procs), [errors.get() for _ in range(errors.qsize())]
    ddp = torch.load(tmp_path / "ddp" / "params.pt")
    for a, b in zip(ddp, one, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert any(not torch.equal(a, b) for a, b in zip(ddp, _ddp_params(tmp_path / "fewer", 8), strict=True))


def _stop_a_training(tmp_path: Path, signum: int, *overrides: str, group: bool = False) -> tuple[Path, dict]:
    """Start a toy training, send `signum` at step 4 (to its whole process group, as Ctrl-C in a terminal or
    SLURM does, when `group`), and return (run dir, its one checkpoint) after checking the exit and the log."""
    run_dir = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "tools" / "train.py"), "experiment=toy", "train.max_epochs=1000",
           "train.log_interval=2", "train.eval_interval=0", "train.ckpt_interval=0", "train.tensorboard=false",
           "dataset.train_size=128", f"hydra.run.dir={run_dir}", *overrides]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=group)
    log = run_dir / "train.log"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (log.exists() and "step 4/" in log.read_text()):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.1)
    if group:
        time.sleep(0.3)  # the workers are fetching a step's batches by then
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err[-3000:]
    saved = sorted((run_dir / "checkpoints").glob("step_*.pt"))
    assert len(saved) == 1, err[-3000:]
    assert f"stopped by signal {int(signum)}" in log.read_text()
    assert not list((run_dir / "checkpoints").glob(".*tmp*"))
    return run_dir, load_checkpoint(saved[0])


def test_sigterm_saves_a_loadable_checkpoint(tmp_path):
    _, ckpt = _stop_a_training(tmp_path, signal.SIGTERM)
    assert ckpt["progress"]["step"] >= 4 and ckpt["config"]["experiment_name"] == "toy"


def test_ctrl_c_to_the_whole_group_stops_a_run_with_workers_cleanly(tmp_path):
    """Ctrl-C reaches the loader's workers too: the run must save, not end with "DataLoader worker exited
    unexpectedly" (accumulate 8: the signal lands mid-step, and the stop waits for the step's last batches)."""
    _, ckpt = _stop_a_training(tmp_path, signal.SIGINT, "train.workers=1", "train.accumulate=8", group=True)
    assert ckpt["progress"]["step"] >= 4


def test_sigterm_to_the_whole_group_stops_a_run_with_workers_cleanly(tmp_path):
    """SLURM's SIGTERM reaches every process of the job: the workers leave it to the trainer, which saves."""
    _, ckpt = _stop_a_training(tmp_path, signal.SIGTERM, "train.workers=1", "train.accumulate=8", group=True)
    assert ckpt["progress"]["step"] >= 4


def test_a_step_with_non_finite_gradients_is_skipped_and_named(tmp_path, caplog):
    """A NaN loss at step 5 leaves the weights as step 4 left them (no NaN reaches them or the optimizer's
    state), names the batch's frames, and the run goes on; without it step 5 would have moved them."""
    seen = {}
    trainer = poisoned_trainer(tmp_path / "a", {5}, max_iters=8)
    step = trainer.optimizer.step

    def spy(*args, **kwargs):
        out = step(*args, **kwargs)
        seen[len(seen) + 1] = params(trainer)
        return out

    trainer.optimizer.step = spy
    with caplog.at_level(logging.WARNING, logger="pc3d.engine.trainer"):
        result = trainer.fit()
    assert result.step == 8 and trainer.skipped_steps == 1 and len(seen) == 7  # 8 steps, 7 optimizer steps
    assert all(torch.isfinite(p).all() for p in params(trainer))
    assert all(torch.isfinite(b).all() for b in trainer.net.buffers())  # batch-norm statistics put back
    assert "step 5: gradients are not finite" in caplog.text and "this process's batch: toy/" in caplog.text
    assert "1 step(s) were skipped for non-finite gradients" in caplog.text


def test_the_model_hears_of_every_applied_optimizer_step_and_of_no_other(tmp_path):
    """after_optimizer_step (the model contract's optional hook) runs once per optimizer step the trainer applied:
    not per accumulation micro-batch, not for a skipped step (micro-batch 3, step 2's first, has a NaN loss)."""
    trainer = poisoned_trainer(tmp_path, {3}, max_iters=4, accumulate=2)
    heard = []
    trainer.net.after_optimizer_step = lambda: heard.append((trainer.step + 1, trainer.net.calls))
    result = trainer.fit()
    assert result.step == 4 and trainer.skipped_steps == 1
    assert heard == [(1, 2), (3, 6), (4, 8)]  # (step, training forwards so far): step 2 was skipped


def test_non_finite_gradients_step_after_step_stop_the_run(tmp_path):
    from pc3d.errors import TrainingError

    trainer = poisoned_trainer(tmp_path, set(range(3, 100)), max_iters=20, max_nonfinite_steps=2,
                               clip_grad_norm=1.0)
    with pytest.raises(TrainingError, match=r"not finite for 3 steps in a row \(steps 3-5; "
                                            r"train.max_nonfinite_steps=2\): the weights stay at step 2's"):
        trainer.fit()
    assert all(torch.isfinite(t).all() for t in [*params(trainer), *trainer.net.buffers()])


def test_a_resume_applies_this_runs_optim_settings_and_says_so(tmp_path, caplog):
    """optimizer.load_state_dict restores every group setting: a changed weight decay or betas was silently the
    checkpoint's. This run's config applies (the schedule sets the lr), with a warning naming what changed."""
    make_trainer(tmp_path / "a", max_iters=4, ckpt_interval=2).fit()
    again = make_trainer(tmp_path / "b", max_iters=4)
    for group in again.optimizer.param_groups:  # as optim.weight_decay / optim.betas overrides build it
        group.update(weight_decay=0.5, betas=(0.9, 0.9))
    with caplog.at_level(logging.WARNING, logger="pc3d.engine.trainer"):
        again.resume(tmp_path / "a" / "checkpoints" / "step_00000002.pt")
    assert all(g["weight_decay"] == 0.5 and tuple(g["betas"]) == (0.9, 0.9) for g in again.optimizer.param_groups)
    assert "other optim settings (betas, weight_decay)" in caplog.text
    same = make_trainer(tmp_path / "c", max_iters=4)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pc3d.engine.trainer"):
        same.resume(tmp_path / "a" / "checkpoints" / "step_00000002.pt")  # unchanged settings: no warning
    assert "other optim settings" not in caplog.text and "schedule is stretched" not in caplog.text
    longer = make_trainer(tmp_path / "d", max_iters=8)
    with caplog.at_level(logging.WARNING, logger="pc3d.engine.trainer"):
        longer.resume(tmp_path / "a" / "checkpoints" / "step_00000002.pt")
    assert "a run of 4 steps, this one has 8" in caplog.text


def test_the_logged_lr_is_the_one_the_step_used(tmp_path):
    t = make_trainer(tmp_path, max_iters=6, log_interval=1)
    used = []
    step = t.optimizer.step

    def recording_step(*args, **kwargs):
        used.append(t.optimizer.param_groups[0]["lr"])
        return step(*args, **kwargs)

    t.optimizer.step = recording_step
    logged = []
    t._log = lambda *args: logged.append(t._lr)
    t.fit()
    assert logged == used and len(set(used)) > 1


class _ShiftedFrames(PointCloudDataset):
    """Eight frames of 16 points near the origin; the one augmentation moves every point 100 m along x."""

    def __init__(self):
        super().__init__(augmentations=[_shift_x], training=True)
        self.frames = list(range(8))

    def load(self, index: int) -> dict:
        points = np.random.default_rng(index).uniform(-1, 1, (16, 4)).astype(np.float32)
        return {"points": points, "frame_id": str(index)}


def _shift_x(sample: dict, rng: np.random.Generator) -> dict:
    del rng
    points = sample["points"].copy()
    points[:, 0] += 100.0
    return {**sample, "points": points}


class _AugmentationRecorder(torch.nn.Module):
    """A model that notes, per training batch, whether its points were augmented (moved along x)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.augmented: list[bool] = []

    def forward(self, batch):
        if self.training:
            self.augmented.append(bool((batch["points"][:, 0] > 50).all()))
        return {"loss": (self.w - 1).square().sum()}


@pytest.mark.parametrize(("limit", "plain", "expected"), [
    ({"max_epochs": 3}, 1, [True] * 4 + [False] * 2),
    ({"max_epochs": 3}, 2, [True] * 2 + [False] * 4),
    ({"max_iters": 5}, 1, [True] * 4 + [False]),   # epochs 0-2 of 2 steps, the last one cut short: it is plain
    ({"max_epochs": 3}, 0, [True] * 6),
    ({"max_epochs": 3, "workers": 2}, 1, [True] * 4 + [False] * 2),  # persistent workers hear it too
])
def test_plain_last_epochs_load_frames_without_augmentation(tmp_path, limit, plain, expected):
    model = _AugmentationRecorder()
    trainer = Trainer(model, _ShiftedFrames(), optimizer=partial(torch.optim.SGD, lr=0.1),
                      settings=TrainSettings(**limit, batch_size=4, eval_interval=0, ckpt_interval=0,
                                             tensorboard=False, plain_last_epochs=plain), run_dir=tmp_path, seed=0)
    trainer.fit()
    assert model.augmented == expected


def test_plain_last_epochs_needs_an_augmented_epoch_and_a_dataset_that_can_stop(tmp_path):
    settings = {"batch_size": 4, "eval_interval": 0, "ckpt_interval": 0, "tensorboard": False}
    with pytest.raises(ConfigError, match="leaves no augmented epoch of the run's 3"):
        Trainer(_AugmentationRecorder(), _ShiftedFrames(), optimizer=partial(torch.optim.SGD, lr=0.1),
                settings=TrainSettings(max_epochs=3, plain_last_epochs=3, **settings), run_dir=tmp_path)
    with pytest.raises(ConfigError, match="ToyShapes has none"):
        Trainer(_AugmentationRecorder(), ToyShapes("train", train_size=8), optimizer=partial(torch.optim.SGD, lr=0.1),
                settings=TrainSettings(max_epochs=3, plain_last_epochs=1, **settings), run_dir=tmp_path)
    with pytest.raises(ConfigError, match="plain_last_epochs must be >= 0"):
        TrainSettings(max_epochs=3, plain_last_epochs=-1)


def _sgd_trainer(run_dir, batch_size, accumulate):
    seed_everything(0)
    data = {"train_size": 16, "val_size": 8, "num_points": 32, "augment": False}
    settings = TrainSettings(max_iters=1, batch_size=batch_size, accumulate=accumulate, log_interval=1,
                             eval_interval=0, ckpt_interval=0, tensorboard=False)
    return Trainer(ToyPointNet(width=16, dropout=0.0), ToyShapes("train", **data),
                   optimizer=partial(torch.optim.SGD, lr=0.5), settings=settings, run_dir=run_dir, seed=0)


def test_accumulated_micro_batches_step_as_one_batch(tmp_path):
    # 2 micro-batches of 4 with accumulate=2 give the gradient of one batch of 8 (the mean loss),
    # so plain SGD (scale-sensitive, unlike Adam) lands on the same weights
    one = _sgd_trainer(tmp_path / "one", 8, 1)
    two = _sgd_trainer(tmp_path / "two", 4, 2)
    start = params(one)
    one.fit()
    two.fit()
    moved = max(float((a - b).abs().max()) for a, b in zip(params(one), start, strict=True))
    assert moved > 1e-3
    for a, b in zip(params(one), params(two), strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_a_skipped_step_leaves_the_ema_alone(tmp_path):
    # step 5's loss is NaN, so of 8 steps 7 are applied and the EMA is updated 7 times
    trainer = poisoned_trainer(tmp_path, {5}, max_iters=8, ema_decay=0.9)
    trainer.ema = ModelEMA(trainer.net, 0.9)  # poisoned_trainer wraps the net after the EMA copy was made
    trainer.fit()
    assert trainer.skipped_steps == 1 and trainer.ema.updates == 7
