"""Checkpoints: atomic writes, corrupted / foreign files, `latest` fallback, rotation, RNG states, the best
checkpoint's bookkeeping, EMA weights."""
from __future__ import annotations

import datetime
import logging
import random

import numpy as np
import pytest
import torch

from pc3d.engine import checkpoint as ckpt_mod
from pc3d.engine.checkpoint import CheckpointManager, atomic_save, load_checkpoint, load_weights, resolve_checkpoint
from pc3d.engine.seeding import rng_state, set_rng_state
from pc3d.errors import CheckpointError


def _state(value: float) -> dict:
    return {"model": {"w": torch.full((3,), value)}, "progress": {"step": int(value)}, "rng": [rng_state()]}


def test_atomic_save_never_leaves_a_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    atomic_save({"format": ckpt_mod.FORMAT, "model": {"w": torch.ones(2)}}, path)
    good = path.read_bytes()

    def crash(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"model": {}}, path)
    assert path.read_bytes() == good                       # the previous file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]   # no temp file left behind
    with pytest.raises(OSError):
        atomic_save({"model": {}}, tmp_path / "new.pt")
    assert not (tmp_path / "new.pt").exists()


def test_truncated_checkpoint_raises_and_latest_falls_back(tmp_path, caplog):
    manager = CheckpointManager(tmp_path, keep_last=3)
    first = manager.save(_state(1.0), step=1)
    second = manager.save(_state(2.0), step=2)
    data = second.read_bytes()
    second.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="step_00000002.pt"):
        load_checkpoint(second)
    with caplog.at_level(logging.WARNING):
        assert manager.latest() == first
    assert "step_00000002.pt" in caplog.text
    assert resolve_checkpoint(tmp_path) == first
    assert load_checkpoint(first)["model"]["w"][0] == 1.0


def test_foreign_and_garbage_files_raise(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.ones(1)}}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt: not a pc3d checkpoint"):
        load_checkpoint(foreign)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    bare = tmp_path / "bare.pt"
    torch.save({"w": torch.ones(2)}, bare)
    assert load_weights(bare)["w"].shape == (2,)           # a bare state_dict loads as weights


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": ckpt_mod.FORMAT, "model": {}, "x": datetime.timedelta(days=1)}, path)
    with pytest.raises(CheckpointError, match="evil.pt: a pickled checkpoint .*datetime.timedelta.*weights_only=True"
                                              ".*convert-checkpoint") as raised:
        load_checkpoint(path)
    assert "truncated" not in str(raised.value) and "\n" not in str(raised.value)
    converted = tmp_path / "converted.pt"
    assert ckpt_mod.convert_checkpoint(path, converted) == ["x (datetime.timedelta)"]
    assert load_checkpoint(converted)["format"] == ckpt_mod.FORMAT and "x" not in load_checkpoint(converted)


def test_rotation_keeps_last_k_and_best(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2, best_metric="acc", mode="max")
    for step, acc in [(1, 0.5), (2, 0.9), (3, 0.7), (4, 0.8)]:
        manager.save(_state(float(step)), step=step, metrics={"acc": acc})
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["best.pt", "step_00000003.pt", "step_00000004.pt"]
    best = load_checkpoint(manager.best_path)
    assert best["progress"]["step"] == 2 and best["best"]["value"] == 0.9
    restored = CheckpointManager(tmp_path, keep_last=2, best_metric="acc", mode="max")
    restored.load_best_state(load_checkpoint(tmp_path / "step_00000004.pt")["best"])
    assert not restored.is_better({"acc": 0.85}) and restored.is_better({"acc": 0.95})


def test_rng_state_round_trips_through_weights_only(tmp_path):
    random.seed(1)
    np.random.seed(2)  # noqa: NPY002 - the global generators are what rng_state saves
    torch.manual_seed(3)
    np.random.normal()  # noqa: NPY002 - leave a cached gaussian in numpy's state
    atomic_save({"rng": rng_state()}, tmp_path / "rng.pt")
    expected = random.random(), np.random.normal(size=3), torch.rand(3)  # noqa: NPY002
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    assert random.random() == expected[0]
    np.testing.assert_array_equal(np.random.normal(size=3), expected[1])  # noqa: NPY002
    assert torch.equal(torch.rand(3), expected[2])


def test_weights_holding_nan_are_refused_by_name(tmp_path):
    from pc3d.engine.checkpoint import load_model_state
    from pc3d.errors import CheckpointError

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["0.weight"][1, 2] = float("nan")
    with pytest.raises(CheckpointError, match=r"diverged\.pt: 1 weight tensor\(s\) hold NaN / inf \(0\.weight\)"):
        load_model_state(model, state, tmp_path / "diverged.pt")
    state["0.weight"][1, 2] = 0.5
    load_model_state(model, state, tmp_path / "fine.pt")
    assert model[0].weight[1, 2] == 0.5


def test_an_equal_metric_does_not_move_best(tmp_path):
    # best.pt stays on the first save that reached the best value, in either mode
    manager = CheckpointManager(tmp_path, keep_last=3, best_metric="acc", mode="max")
    state = {"model": {"w": torch.zeros(1)}, "progress": {"step": 1}}
    manager.save(state, 1, {"acc": 0.5})
    manager.save({**state, "progress": {"step": 2}}, 2, {"acc": 0.5})
    assert manager.best_step == 1 and load_checkpoint(manager.best_path)["progress"]["step"] == 1
    manager_min = CheckpointManager(tmp_path / "min", best_metric="loss", mode="min")
    manager_min.save(state, 1, {"loss": 0.5})
    manager_min.save({**state, "progress": {"step": 2}}, 2, {"loss": 0.5})
    assert manager_min.best_step == 1


def test_a_nan_metric_never_becomes_the_best(tmp_path):
    # a NaN evaluation (a diverged run) is not a best, even the first
    manager = CheckpointManager(tmp_path, best_metric="acc", mode="max")
    state = {"model": {"w": torch.zeros(1)}, "progress": {"step": 1}}
    manager.save(state, 1, {"acc": float("nan")})
    assert manager.best_step is None and not manager.best_path.exists()
    manager.save({**state, "progress": {"step": 2}}, 2, {"acc": 0.3})
    assert manager.best_step == 2 and manager.best_path.exists()


def test_a_best_of_another_mode_is_not_loaded(tmp_path):
    # a run resumed with best_mode changed max -> min starts its best afresh
    manager = CheckpointManager(tmp_path, best_metric="acc", mode="min")
    manager.load_best_state({"metric": "acc", "mode": "max", "value": 0.9, "step": 3})
    assert manager.best_state() == {"metric": "acc", "mode": "min", "value": None, "step": None}
    manager.load_best_state({"metric": "acc", "mode": "min", "value": 0.2, "step": 4})
    assert manager.best_value == 0.2 and manager.best_step == 4


def test_load_weights_takes_the_ema_only_when_asked(tmp_path):
    # the checkpoint holds both: the EMA's weights (ones) by default, the raw model's (zeros) with ema=False
    manager = CheckpointManager(tmp_path)
    path = manager.save({"model": {"w": torch.zeros(2)}, "ema": {"model": {"w": torch.ones(2)}, "updates": 3,
                                                                    "decay": 0.9}, "progress": {"step": 1}}, 1)
    assert load_weights(path)["w"].tolist() == [1.0, 1.0]
    assert load_weights(path, ema=False)["w"].tolist() == [0.0, 0.0]
