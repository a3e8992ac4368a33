"""End to end: tools/train.py experiment=toy, tools/test.py on its run, torchrun with 2 gloo ranks."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pc3d.engine.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
FAST = ["train.max_epochs=2", "dataset.train_size=256", "dataset.val_size=64", "train.tensorboard=false"]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.mark.slow
def test_train_then_test_writes_the_metrics_table(tmp_path):
    _run([sys.executable, str(ROOT / "tools" / "train.py"), "experiment=toy", *FAST], tmp_path)
    (run_dir,) = (tmp_path / "outputs" / "toy").iterdir()
    for name in ("config.yaml", "train.log", "metrics.json", "checkpoints/best.pt", ".hydra/overrides.yaml"):
        assert (run_dir / name).exists(), name
    history = json.loads((run_dir / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    proc = _run([sys.executable, str(ROOT / "tools" / "test.py"), f"run_dir={run_dir}"], tmp_path)
    assert "| accuracy |" in proc.stdout
    out = run_dir / "test_val"
    assert "| mean_class_accuracy |" in (out / "metrics.md").read_text()
    assert json.loads((out / "metrics.json").read_text())["metrics"]["accuracy"] > 40
    assert len((out / "predictions" / "predictions.txt").read_text().splitlines()) == 64
    # every kept step, each scored as the run scored it at that step
    proc = _run([sys.executable, str(ROOT / "tools" / "test.py"), f"run_dir={run_dir}", "all_steps=true"], tmp_path)
    steps = json.loads((out / "steps.json").read_text())
    assert [s["step"] for s in steps["steps"]] == [h["step"] for h in history] == [16, 32]
    assert steps["metric"] == "accuracy" and steps["split"] == "val"
    for row, seen in zip(steps["steps"], history, strict=True):
        assert row["metrics"]["accuracy"] == pytest.approx(seen["accuracy"])
        stored = json.loads((out / f"step_{row['step']:08d}" / "metrics.json").read_text())
        assert stored["step"] == row["step"] and stored["metrics"] == row["metrics"]
    assert "| step | accuracy |" in proc.stdout and "| 32 |" in (out / "steps.md").read_text()
    refused = subprocess.run([sys.executable, str(ROOT / "tools" / "test.py"), f"run_dir={run_dir}", "tta=flips"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "ToyPointNet has task 'classification'" in refused.stderr  # shapes: no views


@pytest.mark.slow
def test_torchrun_two_gloo_ranks(tmp_path):
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(ROOT / "tools" / "train.py"),
          "experiment=toy", *FAST], tmp_path)
    (run_dir,) = (tmp_path / "outputs" / "toy").iterdir()   # one run folder: rank 0's, shared with rank 1
    ckpt = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert ckpt["progress"]["world_size"] == 2 and len(ckpt["rng"]) == 2
    assert ckpt["progress"]["step"] == 2 * 256 // (2 * 16)


def test_evaluation_datasets_never_augment(tmp_path):
    """A test split named like a training split ('trainval') is built without augmentation."""
    from omegaconf import OmegaConf

    from pc3d.engine.runner import build_dataset
    from pc3d.sim.api import simulate_dataset

    root = simulate_dataset("kitti", tmp_path / "kitti", frames=2, seed=0)
    node = OmegaConf.create({"_target_": "pc3d.data.KittiDataset", "root": str(root),
                             "augmentations": [{"_target_": "pc3d.data.transforms.RandomFlip", "axes": ["x"],
                                                "prob": 1.0}]})
    assert not build_dataset(node, "trainval", training=False).is_training
    train = build_dataset(node, "trainval", training=True)
    assert train.is_training
    assert not (train[0]["points"] == build_dataset(node, "trainval", training=False)[0]["points"]).all()
    toy = build_dataset(OmegaConf.create({"_target_": "pc3d.data.toy.ToyShapes", "train_size": 8}), "val", False)
    assert toy.split == "val"


def test_progress_without_a_terminal_writes_plain_lines():
    from pc3d.utils.progress import Progress, track

    lines: list[str] = []
    assert list(track(range(3), desc="load", unit="frame", interval=0.0, log=lines.append)) == [0, 1, 2]
    assert len(lines) == 4 and lines[-1].startswith("load: 3/3 frame (100 %)") and lines[-1].endswith(", done")
    with Progress(total=5, desc="quiet", enabled=False, log=lines.append) as bar:
        bar.update_to(5)
    assert len(lines) == 4


def test_simulate_and_test_command_lines(tmp_path):
    """tools/simulate.py piped: one plain progress line, no bar; tools/test.py accepts dataset_root=."""
    proc = _run([sys.executable, str(ROOT / "tools" / "simulate.py"), "format=scannet", "frames=1",
                 f"out={tmp_path / 'scannet'}"], tmp_path)
    assert "\r" not in proc.stderr and "simulate scannet: 1/1 frame (100 %)" in proc.stderr
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "test.py"), f"run_dir={tmp_path / 'no_run'}",
                           f"dataset_root={tmp_path / 'scannet'}"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0 and "Could not override" not in proc.stderr
    assert "no_run" in proc.stderr


def test_mix_prob_reaches_the_training_sets_collate_only(tmp_path):
    from omegaconf import OmegaConf

    from pc3d.engine.runner import build_dataset
    from pc3d.errors import ConfigError
    from pc3d.sim.api import simulate_dataset

    root = simulate_dataset("semantickitti", tmp_path / "sk", frames=2, seed=0)
    node = OmegaConf.create({"_target_": "pc3d.data.SemanticKittiDataset", "root": str(root), "sequences": ["00"],
                             "mix_prob": 0.8})
    assert build_dataset(node, "train", training=True).collate_fn.mix_prob == 0.8
    assert build_dataset(node, "train", training=False).collate_fn.mix_prob == 0.0
    with pytest.raises(ConfigError, match="needs a dataset collated by pc3d.data.batch.Collate; ToyShapes"):
        build_dataset(OmegaConf.create({"_target_": "pc3d.data.toy.ToyShapes", "train_size": 8, "mix_prob": 0.5}),
                      "train", True)
    with pytest.raises(ConfigError, match="mix_prob must be a number in"):
        build_dataset(OmegaConf.merge(node, {"mix_prob": 1.5}), "train", True)
