"""pc3d.models.contract: one schema per task, one checker."""
from __future__ import annotations

import numpy as np
import pytest

from pc3d.errors import ConfigError
from pc3d.models.contract import TASKS, check_prediction, task_of

GOOD = {
    "detection": {"frame_id": "000001", "boxes": np.zeros((2, 7), np.float32), "scores": np.ones(2, np.float32),
                  "labels": np.array([1, 3])},
    "segmentation": {"frame_id": "08/000000", "pred_labels": np.zeros(5, np.int64)},
    "mos": {"frame_id": "08/000000", "moving": np.array([0, 1, 1], np.uint8)},
    "flow": {"frame_id": "0", "flow": np.zeros((4, 3), np.float32)},
    "classification": {"frame_id": "0", "label": np.int64(2), "scores": np.array([0.1, 0.2, 0.7], np.float32)},
}


@pytest.mark.parametrize("task", TASKS)
def test_good_predictions_pass(task):
    check_prediction(task, GOOD[task])


@pytest.mark.parametrize(("task", "change", "match"), [
    ("detection", {"boxes": np.zeros((2, 6), np.float32)}, "trailing size"),
    ("detection", {"scores": np.ones(3, np.float32)}, "differ in length"),
    ("detection", {"labels": np.array([0, 1])}, "1..K"),
    ("detection", {"boxes": np.zeros((2, 7), np.int64)}, "float"),
    ("segmentation", {"pred_labels": np.zeros(5, np.float32)}, "integer"),
    ("flow", {"flow": np.zeros((4, 2), np.float32)}, "trailing size"),
    ("classification", {"label": np.int64(3)}, "outside"),
    ("mos", {"boxes": np.zeros((1, 7), np.float32)}, "no 'scores'"),
])
def test_broken_predictions_name_frame_and_key(task, change, match):
    with pytest.raises(ConfigError, match=match) as info:
        check_prediction(task, {**GOOD[task], **change})
    assert repr(GOOD[task]["frame_id"]) in str(info.value) or "frame_id" in str(info.value)


def test_per_point_outputs_cover_every_point():
    check_prediction("segmentation", GOOD["segmentation"], num_points=5)
    with pytest.raises(ConfigError, match="5 rows for 6 points"):
        check_prediction("segmentation", GOOD["segmentation"], num_points=6)
    with pytest.raises(ConfigError, match="3 rows for 4 points"):
        check_prediction("mos", GOOD["mos"], num_points=4)


def test_missing_frame_id_and_unknown_task():
    with pytest.raises(ConfigError, match="frame_id"):
        check_prediction("flow", {"flow": np.zeros((1, 3), np.float32)})
    with pytest.raises(ConfigError, match="unknown task"):
        check_prediction("tracking", GOOD["flow"])


def test_task_of():
    class Model:
        task = "mos"

    assert task_of(Model()) == "mos"
    with pytest.raises(ConfigError, match="class attribute task"):
        task_of(object())
