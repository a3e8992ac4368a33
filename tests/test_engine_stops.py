"""Stops and resumes at the edges: a stop on an evaluation boundary, a signal during the final evaluation, resuming
a finished run, from an older save of the same run dir, or into another run dir; fp16's skipped steps; a best_metric
the evaluation does not report."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from trainer_helpers import make_trainer, one_thread, poisoned_trainer  # noqa: F401 (autouse fixture)

from pc3d.engine import trainer as trainer_module
from pc3d.engine.checkpoint import load_checkpoint
from pc3d.engine.ema import ModelEMA
from pc3d.engine.runner import find_checkpoint, resume_path
from pc3d.engine.signals import StopRequest

TESTS = Path(__file__).resolve().parent


def stop_at(monkeypatch, trainer, step: int) -> None:
    """The next fit() of `trainer` stops as a SIGTERM would make it, once it has taken `step` steps."""
    class StopAt(StopRequest):
        @property
        def requested(self) -> bool:
            return self.signum is not None or trainer.step >= step

    monkeypatch.setattr(trainer_module, "StopRequest", StopAt)


def evaluated_steps(run_dir: Path) -> list[int]:
    return [h["step"] for h in json.loads((run_dir / "metrics.json").read_text())["history"]]


@pytest.mark.parametrize("unit", ["iters", "epochs"])
def test_a_stop_on_an_evaluation_boundary_evaluates_on_resuming(tmp_path, monkeypatch, unit):
    """The stop saves before the evaluation due at its step; the resumed run makes it up, once."""
    settings = ({"max_iters": 12, "eval_interval": 4, "ckpt_interval": 4} if unit == "iters" else
                {"max_iters": None, "max_epochs": 3, "eval_interval": 1, "ckpt_interval": 1})  # 8 steps an epoch
    every = 4 if unit == "iters" else 8
    straight = make_trainer(tmp_path / "straight", best_metric="accuracy", **settings)
    straight.fit()
    stopped = make_trainer(tmp_path / "run", best_metric="accuracy", **settings)
    stop_at(monkeypatch, stopped, 2 * every)
    assert stopped.fit().interrupted and evaluated_steps(tmp_path / "run") == [every]
    monkeypatch.undo()
    make_trainer(tmp_path / "run", best_metric="accuracy", **settings).fit(resume=tmp_path / "run")
    assert evaluated_steps(tmp_path / "run") == evaluated_steps(tmp_path / "straight") == [every, 2 * every, 3 * every]
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / f"step_{2 * every:08d}.pt")["metrics"]


def test_resuming_a_finished_run_neither_evaluates_nor_saves_again(tmp_path):
    make_trainer(tmp_path, max_iters=8, eval_interval=4, ckpt_interval=4).fit()
    saved = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "checkpoints").iterdir()}
    again = make_trainer(tmp_path, max_iters=8, eval_interval=4, ckpt_interval=4)
    again.run_eval = lambda writer=None: pytest.fail("evaluated again")
    again.fit(resume=tmp_path)
    assert evaluated_steps(tmp_path) == [4, 8]
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "checkpoints").iterdir()} == saved


def test_a_signal_during_the_final_evaluation_still_saves_the_run(tmp_path):
    """SLURM's SIGTERM (preemption, the time limit) while the last evaluation runs: the run saves before it
    evaluates, finishes it, saves again with its metrics and ends as finished."""
    script = f"""
import os, signal, sys
sys.path.insert(0, {str(TESTS)!r})
import torch
torch.set_num_threads(1)
from trainer_helpers import make_trainer
trainer = make_trainer({str(tmp_path)!r}, max_iters=8, best_metric="accuracy")
evaluate = trainer.run_eval
def run_eval(writer=None):
    assert (trainer.run_dir / "checkpoints" / "step_00000008.pt").is_file()  # saved before
    os.kill(os.getpid(), signal.SIGTERM)
    return evaluate(writer)
trainer.run_eval = run_eval
result = trainer.fit()
print("interrupted", result.interrupted, "signal", result.signal)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "interrupted False signal 15" in proc.stdout
    assert load_checkpoint(tmp_path / "checkpoints" / "step_00000008.pt")["metrics"]["accuracy"] >= 0
    assert (tmp_path / "checkpoints" / "best.pt").is_file() and evaluated_steps(tmp_path) == [8]


def test_resuming_from_an_older_save_sets_the_later_ones_aside(tmp_path, monkeypatch):
    """Going back to step 16 of a 24-step run dir: the saves of steps 20 and 24 (and a best.pt among them) belong to
    the abandoned continuation; rotation must not delete the new saves for them, nor resume=auto or tools/test.py
    take them."""
    scores = iter([10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 1.0, 2.0])  # the best: step 24, then step 16 on the way back
    settings = {"max_iters": 24, "eval_interval": 4, "ckpt_interval": 4, "keep_last": 3, "best_metric": "accuracy"}
    first = make_trainer(tmp_path, **settings)
    first.evaluator = lambda dataset, predictions: {"accuracy": next(scores)}
    first.fit()
    folder = tmp_path / "checkpoints"
    assert [p.name for p in sorted(folder.glob("step_*"))] == ["step_00000016.pt", "step_00000020.pt",
                                                                "step_00000024.pt"]
    back = make_trainer(tmp_path, **{**settings, "keep_last": 2})
    back.evaluator = lambda dataset, predictions: {"accuracy": next(scores)}
    stop_at(monkeypatch, back, 18)
    result = back.fit(resume=folder / "step_00000016.pt")
    assert result.interrupted and result.last_checkpoint.is_file()
    assert [p.name for p in sorted(folder.glob("step_*"))] == ["step_00000016.pt", "step_00000018.pt"]
    assert sorted(p.name for p in (folder / "abandoned_after_16").iterdir()) == ["best.pt", "step_00000020.pt",
                                                                              "step_00000024.pt"]
    assert resume_path("auto", tmp_path).name == "step_00000018.pt"
    assert load_checkpoint(find_checkpoint(None, str(tmp_path)))["progress"]["step"] == 16  # that timeline's best
    assert evaluated_steps(tmp_path) == [4, 8, 12, 16]


def test_resuming_into_another_run_dir_brings_the_history_and_best(tmp_path, monkeypatch):
    """tools/train.py resume=<run dir> without hydra.run.dir trains on in a new folder: its metrics.json and best.pt
    continue the old run's (here the best is the old run's first evaluation, which no later one beats)."""
    scores = iter([90.0, 80.0, 70.0, 60.0])
    settings = {"max_iters": None, "max_epochs": 3, "eval_interval": 1, "ckpt_interval": 1, "best_metric": "accuracy"}
    old = make_trainer(tmp_path / "old", **settings)
    old.evaluator = lambda dataset, predictions: {"accuracy": next(scores)}
    stop_at(monkeypatch, old, 10)
    assert old.fit().interrupted
    monkeypatch.undo()
    new = make_trainer(tmp_path / "new", **settings)
    new.evaluator = lambda dataset, predictions: {"accuracy": next(scores)}
    new.fit(resume=tmp_path / "old")
    assert evaluated_steps(tmp_path / "new") == [8, 16, 24]
    best = find_checkpoint(None, str(tmp_path / "new"))
    assert best.name == "best.pt" and load_checkpoint(best)["progress"]["step"] == 8


def test_fp16_skipped_steps_put_batch_norm_back_and_count_only_non_finite_losses(tmp_path, caplog):
    """fp16's GradScaler (a CPU one here: fp16 training needs CUDA) skips steps itself. A NaN batch at step 5 must
    leave the batch-norm statistics and the EMA as they were; NaN losses step after step stop the run; the steps
    where only the scaled gradients overflow (its scale search) are not counted."""
    def fp16_trainer(run_dir, poisoned, **settings):
        trainer = poisoned_trainer(run_dir, poisoned, max_iters=20, ema_decay=0.9, **settings)
        trainer.ema = ModelEMA(trainer.net, 0.9)
        trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 127)  # its first step overflows
        return trainer

    trainer = fp16_trainer(tmp_path / "one", {5}, max_nonfinite_steps=1)
    with caplog.at_level(logging.WARNING, logger="pc3d.engine.trainer"):
        trainer.fit()
    assert trainer.skipped_steps == 1 and "step 5: the loss is not finite" in caplog.text
    assert all(torch.isfinite(b).all() for m in (trainer.net, trainer.ema.model) for b in m.buffers())
    assert trainer.scaler.get_scale() == 2.0 ** 125  # the scaler skipped two steps: its overflow is uncounted
    from pc3d.errors import TrainingError

    with pytest.raises(TrainingError, match=r"3 steps in a row"):
        fp16_trainer(tmp_path / "many", set(range(9, 100)), max_nonfinite_steps=2).fit()


def test_a_best_metric_the_evaluation_lacks_is_named(tmp_path, caplog):
    trainer = make_trainer(tmp_path, max_iters=8, eval_interval=4, ckpt_interval=4, best_metric="acuracy")
    with caplog.at_level(logging.WARNING, logger="pc3d.engine.trainer"):
        trainer.fit()
    assert "train.best_metric='acuracy' is not among this evaluation's metrics" in caplog.text
    assert "accuracy, mean_class_accuracy" in caplog.text and not (tmp_path / "checkpoints" / "best.pt").exists()


def test_a_run_that_fails_while_training_keeps_its_folder(tmp_path):
    """tools/train.py removes the folder of a run that failed before training (a bad path, a bad value), but not
    one that failed while training: its train.log names the frames of the steps that went wrong."""
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(TESTS.parent / "tools" / "train.py"), "experiment=toy", "optim.lr=1e38",
                           "train.max_nonfinite_steps=2", "train.tensorboard=false", f"hydra.run.dir={run_dir}"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2 and "not finite for 3 steps in a row" in proc.stderr, proc.stderr[-3000:]
    assert "the step is skipped" in (run_dir / "train.log").read_text()

