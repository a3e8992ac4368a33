"""A training config is checked, key by key, before anything is built or written (tools/train.py composes it
before hydra creates the run folder)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from pc3d.engine.runner import check_train_config
from pc3d.engine.settings import TrainSettings
from pc3d.errors import CheckpointError, ConfigError

ROOT = Path(__file__).resolve().parents[1]


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        return compose("config", overrides=["experiment=toy", *overrides])


def test_the_toy_recipe_passes():
    settings = check_train_config(composed())
    assert isinstance(settings, TrainSettings) and settings.batch_size >= 1


@pytest.mark.parametrize(("override", "key"), [
    ("train.max_epochs=abc", "train.max_epochs"), ("train.max_epochs=0", "train.max_epochs"),
    ("train.batch_size=-2", "train.batch_size"), ("train.workers=-1", "train.workers"),
    ("train.keep_last=0", "train.keep_last"), ("train.eval_interval=-1", "train.eval_interval"),
    ("train.precision=bf17", "train.precision"), ("train.best_mode=up", "train.best_mode"),
    ("train.clip_grad_norm=0", "train.clip_grad_norm"), ("train.clip_grad_norm=nan", "train.clip_grad_norm"),
    ("train.ema_decay=1.5", "train.ema_decay"), ("optim.lr=nan", "optim.lr"), ("optim.lr=-0.1", "optim.lr"),
    ("optim.weight_decay=abc", "optim.weight_decay"), ("seed=x", "seed"), ("threads=0", "threads"),
    ("train.max_iters=5", "train.max_epochs"),  # both set
    ("device=tpu", "device"), ("device=cuda:x", "device"),
    # optim and schedule: built over a dummy parameter (torch's own refusals, and what torch takes but diverges)
    ("+optim.weight_decy=0.5", "optim"), ("optim.betas=[0.9,1.5]", "optim.betas"),
    ("optim=sgd optim.momentum=1.5", "optim.momentum"), ("schedule.warmup_steps=abc", "schedule.warmup_steps"),
    ("schedule.min_lr_ratio=-0.5", "schedule.min_lr_ratio"), ("schedule=onecycle schedule.div_factor=0",
                                                                  "schedule.div_factor"),
    ("schedule=onecycle schedule.pct_start=1.5", "schedule.pct_start"),
    ("schedule=onecycle +schedule.warmup_steps=5", "schedule"), ("schedule=onecycle schedule.moms=[0.95,1.5]",
                                                                 "schedule.moms"),
    ("schedule=step schedule.milestones=0.5", "schedule.milestones"), ("schedule=step schedule.gamma=-0.1",
                                                                      "schedule.gamma"),
])
def test_a_bad_value_names_its_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_train_config(composed(*override.split()))


def test_a_missing_or_empty_resume_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt"):
        check_train_config(composed(f"resume={tmp_path / 'nope.pt'}"))
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt"):
        check_train_config(composed(f"resume={tmp_path / 'empty.pt'}"))


def test_a_missing_init_from_checkpoint_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt"):
        check_train_config(composed(f"init_from={tmp_path / 'nope.pt'}"))


@pytest.mark.parametrize(("args", "needle"), [
    (("experiment=toy", "train.max_epochs=abc"), "train.max_epochs"),
    (("experiment=toy", "train.foo=1"), "train.foo"),
    (("experiment=nope",), "experiment/nope"),
    (("experiment=second_sim_kitti", "dataset.root=/nonexistent/kitti"), "/nonexistent/kitti"),  # found mid-build
])
def test_train_rejects_before_writing_a_run_folder(tmp_path, args, needle):
    out = tmp_path / "outputs"
    env = {**os.environ, "PC3D_DEBUG": "0"}
    done = subprocess.run([sys.executable, "tools/train.py", *args, f"output_dir={out}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("train: error: ") and needle in lines[0], lines
    assert not out.exists() or not any(out.iterdir())  # no run folder (nor its experiment folder)


def test_building_a_node_reports_the_pc3d_error_or_names_the_target(tmp_path):
    from pc3d.engine.runner import _instantiate, build_dataset
    from pc3d.errors import DataFormatError

    cfg = composed("experiment=second_sim_kitti", f"dataset.root={tmp_path / 'nowhere'}")
    with pytest.raises(DataFormatError, match="nowhere"):  # the loader's own error, not hydra's wrapping
        build_dataset(cfg.dataset, "train", training=True)
    with pytest.raises(ConfigError, match="ToyPointNet"):
        _instantiate(composed("model.num_classes=abc").model)


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("*.yaml")))
def test_recipe_intervals_are_in_the_unit_of_their_run_length(experiment):
    """eval / ckpt intervals count epochs under max_epochs and steps under max_iters: a recipe run by steps that
    evaluates or saves every few steps meant epochs (dsvt_pillar_sim_waymo once saved a checkpoint every step)."""
    cfg = composed(f"experiment={experiment}")
    train = cfg.train
    if train.max_iters is None:
        return
    for key in ("eval_interval", "ckpt_interval") if cfg.splits.get("val") else ("ckpt_interval",):
        interval = train.get(key)
        assert interval is None or interval == 0 or interval >= 20, f"{experiment}: train.{key}={interval} steps"
