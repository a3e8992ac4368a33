"""runner.chosen_on_these_data: tools/test.py says when best.pt was picked by its score on the very data it is
scored on, from among evaluations that went on after it (its score there is the best of several)."""
from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf

from pc3d.engine.runner import chosen_on_these_data

DATASET = {"_target_": "pc3d.data.SemanticKittiDataset", "root": "data/sim", "sequences": None}
HISTORY = [{"step": 400, "epoch": 1, "moving_IoU": 93.8}, {"step": 800, "epoch": 3, "moving_IoU": 93.6}]


def run_folder(tmp_path: Path, history=HISTORY) -> Path:
    (tmp_path / "checkpoints").mkdir(parents=True)
    if history is not None:
        (tmp_path / "metrics.json").write_text(json.dumps({"history": history}))
    return tmp_path / "checkpoints" / "best.pt"


def checkpoint(step: int = 400) -> dict:
    return {"best": {"metric": "moving_IoU", "mode": "max", "value": 93.8, "step": step},
            "config": {"dataset": dict(DATASET), "splits": {"train": "train", "val": "valid", "test": None}}}


def scored_config(ckpt: dict, **dataset) -> object:
    cfg = OmegaConf.create(ckpt["config"])
    for key, value in dataset.items():
        OmegaConf.update(cfg, f"dataset.{key}", value)
    return cfg


def test_a_best_pt_picked_before_the_last_evaluation_on_the_same_data_is_named(tmp_path):
    path, ckpt = run_folder(tmp_path), checkpoint()
    assert chosen_on_these_data(path, ckpt, scored_config(ckpt), "valid") == [
        {"step": 400, "moving_IoU": 93.8}, {"step": 800, "moving_IoU": 93.6}]


def test_other_data_other_steps_and_unpicked_checkpoints_are_not(tmp_path):
    path, ckpt = run_folder(tmp_path), checkpoint()
    assert chosen_on_these_data(path, ckpt, scored_config(ckpt, root="data/other_world"), "valid") is None
    assert chosen_on_these_data(path, ckpt, scored_config(ckpt, sequences=[0, 1]), "valid") is None
    assert chosen_on_these_data(path, ckpt, scored_config(ckpt), "train") is None
    assert chosen_on_these_data(path.with_name("step_00000400.pt"), ckpt, scored_config(ckpt), "valid") is None
    last = checkpoint(step=800)  # the last evaluation won: its score is the last step's
    assert chosen_on_these_data(path, last, scored_config(last), "valid") is None
    unpicked = checkpoint() | {"best": {"metric": None, "step": None}}
    assert chosen_on_these_data(path, unpicked, scored_config(unpicked), "valid") is None


def test_one_evaluation_or_no_record_is_no_choice(tmp_path):
    ckpt = checkpoint()
    once = run_folder(tmp_path / "once", history=HISTORY[:1])
    assert chosen_on_these_data(once, ckpt, scored_config(ckpt), "valid") is None
    unrecorded = run_folder(tmp_path / "none", history=None)
    assert chosen_on_these_data(unrecorded, ckpt, scored_config(ckpt), "valid") is None
