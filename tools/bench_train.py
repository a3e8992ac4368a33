"""`tools/bench.py train`: the cost of pc3d's Trainer over a bare PyTorch loop of the same steps.

Workload: the toy PointNet (width 64, ~150k parameters) on 16 clouds x 512 points per step, AdamW +
warm-up cosine, data in the main process (workers=0) so both sides load the same samples the
same way. The bare loop is DataLoader -> forward -> backward -> step -> zero_grad -> schedule
step. The trainer run is `Trainer.fit()` with its defaults: per-sample seeding, loss sums on the
device, a log line, TensorBoard scalars and a log file every 20 steps, and the final checkpoint
(atomic write + fsync). Both run on one torch thread (a step takes ~40 ms): the overhead is
host-side Python work, and on the shared 2-core machine two threads per process spin against
other jobs and swing run times by 10x. Runs alternate (bare, trainer, trainer, bare, ...) because the reference
machine is shared; the overhead is extra work, so the row compares the least-disturbed (minimum)
times of each side; `speedup_median` compares medians. speedup = bare / trainer; >= 0.95 means at
most 5 % overhead.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from pc3d.data.toy import ToyShapes
from pc3d.engine.monitor import close_logging, setup_logging
from pc3d.engine.optim import param_groups
from pc3d.engine.schedule import WarmupCosine
from pc3d.engine.seeding import seed_everything
from pc3d.engine.settings import TrainSettings
from pc3d.engine.trainer import Trainer
from pc3d.models.toy import ToyPointNet

BATCH, POINTS, WIDTH = 16, 512, 64


def _parts(steps: int):
    seed_everything(0)
    data = ToyShapes("train", train_size=steps * BATCH, num_points=POINTS)
    return data, ToyPointNet(width=WIDTH, dropout=0.1)


def bare_loop(steps: int) -> None:
    data, model = _parts(steps)
    loader = DataLoader(data, batch_size=BATCH, shuffle=True, drop_last=True, collate_fn=ToyShapes.collate_fn)
    optimizer = torch.optim.AdamW(param_groups(model), lr=1e-3)
    schedule = WarmupCosine(optimizer, steps, warmup_ratio=0.05)
    model.train()
    for batch in loader:
        loss = model(batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()


def trainer_run(steps: int, run_dir: Path) -> None:
    data, model = _parts(steps)
    settings = TrainSettings(max_iters=steps, batch_size=BATCH, workers=0, log_interval=20, eval_interval=0,
                             ckpt_interval=0, tensorboard=True)
    trainer = Trainer(model, data, optimizer=partial(torch.optim.AdamW, lr=1e-3),
                      schedule=partial(WarmupCosine, warmup_ratio=0.05), settings=settings, run_dir=run_dir)
    trainer.fit()


def run_train(timed, quick: bool = False) -> list[dict]:
    steps, repeats = (30, 3) if quick else (100, 7)
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        setup_logging(run_dir, console=False)
        torch.set_num_threads(1)
        try:
            bare = partial(bare_loop, steps)
            trained = partial(trainer_run, steps, run_dir)
            bare()
            trained()  # warm-up: imports (TensorBoard), allocator, first checkpoint
            t_bare, t_trainer = [], []
            for r in range(repeats):
                pair = [(t_bare, bare), (t_trainer, trained)]
                for times, fn in pair if r % 2 == 0 else pair[::-1]:
                    times.append(timed(fn, repeats=1, warmup=0))
        finally:
            torch.set_num_threads(threads)
            close_logging()
    bare_s, trainer_s = min(t_bare), min(t_trainer)
    return [{"case": "trainer overhead", "pc3d_s": trainer_s, "ref": "bare loop", "ref_s": bare_s,
             "speedup": bare_s / trainer_s, "speedup_median": statistics.median(t_bare) / statistics.median(t_trainer),
             "steps": steps, "step_ms": 1e3 * bare_s / steps, "threads": 1}]


if __name__ == "__main__":
    def _timed(fn, repeats=1, warmup=0):
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    for row in run_train(_timed, quick=True):
        print(row)
