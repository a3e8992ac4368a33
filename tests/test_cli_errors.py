"""Every entry point answers a user error with one line naming it and exit status 2 (PC3D_DEBUG=1: the traceback)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pc3d.engine.settings import TrainSettings
from pc3d.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def tool(*args: str, debug: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PC3D_DEBUG": "1" if debug else "0"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("settings", "key"), [
    ({"max_epochs": "abc"}, "train.max_epochs"), ({"max_epochs": 2, "batch_size": 2.5}, "train.batch_size"),
    ({"max_epochs": 2, "clip_grad_norm": "x"}, "train.clip_grad_norm"), ({"max_epochs": True}, "train.max_epochs"),
    ({"max_epochs": 2, "precision": 16}, "train.precision"),
])
def test_train_settings_are_type_checked(settings, key):
    with pytest.raises(ConfigError, match=key):
        TrainSettings(**settings)
    TrainSettings(max_epochs=2, clip_grad_norm=10, ema_decay=0.99)  # ints where floats are asked are fine


@pytest.mark.parametrize(("args", "needle"), [
    (("tools/train.py", "experiment=toy", "train.max_epochs=abc"), "train.max_epochs"),
    (("tools/test.py", "run_dir=/nonexistent/run"), "/nonexistent/run"),
    (("tools/test.py", "run_dir=/nonexistent/run", "tta=mirrors"), "tta: unknown views 'mirrors'"),
    (("tools/test.py", "run_dir=/nonexistent/run", "tta=flips", "tta_scales=[0]"), "tta_scales"),
    (("tools/test.py", "ckpt=/nonexistent/step_00000016.pt", "all_steps=true"), "all_steps=true scores"),
    (("tools/test.py", "run_dir=/nonexistent/run", "all_steps=yes"), "all_steps: expected true or false"),
    (("tools/simulate.py", "format=nope", "out=/tmp/pc3d_never"), "nope"),
    (("tools/create_data.py", "kitti", "/nonexistent/kitti"), "/nonexistent/kitti"),
    (("tools/pseudo_quality.py", "/nonexistent/step_00000440.pt"), "/nonexistent/step_00000440.pt"),
])
def test_tools_print_one_line_and_exit_2(tmp_path, args, needle):
    extra = (f"output_dir={tmp_path}",) if args[0] == "tools/train.py" else ()
    done = tool(*args, *extra)
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and ": error: " in lines[0] and needle in lines[0], lines
    assert "Traceback" not in done.stderr


def test_debug_shows_the_traceback():
    done = tool("tools/test.py", "run_dir=/nonexistent/run", debug=True)
    assert done.returncode != 0 and "Traceback" in done.stderr


def test_test_overrides_take_a_mapping_on_the_command_line():
    """tools/test.py's `overrides` is null by default, so `overrides={a.b: 1}` assigns a mapping (an empty
    struct mapping would refuse every new key, and only `++overrides=` would work)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        assert compose("test").overrides is None
        cfg = compose("test", overrides=["overrides={train.workers: 0, dataset.sequences: [0, 1]}"])
    assert dict(cfg.overrides) == {"train.workers": 0, "dataset.sequences": [0, 1]}
