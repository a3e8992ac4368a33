"""Train a model from the hydra configs in configs/ (root: configs/config.yaml).

    python tools/train.py experiment=toy
    python tools/train.py experiment=toy train.max_epochs=10 optim=sgd schedule=step optim.lr=0.05
    python tools/train.py experiment=toy hydra.run.dir=outputs/toy/job42 resume=auto   # restartable job
    torchrun --nproc_per_node 2 tools/train.py experiment=toy                            # DDP (gloo on CPU)

The run folder (`<output_dir>/<experiment_name>/<time>/`, or hydra.run.dir) receives config.yaml,
train.log, checkpoints/, metrics.json and tb/. Exit status: 0 when training finished, 128 + signal
number when SIGINT / SIGTERM stopped it (after saving a checkpoint; resume=<run dir> continues), 2 with one
line on stderr for a pc3d error (bad config value, bad data; PC3D_DEBUG=1 shows the traceback).
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rank_overrides(argv: list[str]) -> list[str]:
    """Ranks > 0 of a torchrun job write nothing of hydra's: rank 0's run folder is broadcast to them."""
    if os.environ.get("RANK", "0") == "0" or any(a.startswith("hydra.run.dir=") for a in argv):
        return argv
    return [*argv, "hydra.run.dir=.", "hydra.output_subdir=null"]


def precheck(argv: list[str]) -> int:
    """Compose the config as hydra.main will and check it before hydra creates the run folder: a bad value,
    an unknown key or a missing recipe exits 2 with one line and leaves nothing behind; 0 when it passes."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    from pc3d.engine.runner import check_train_config
    from pc3d.errors import ConfigError, Pc3dError
    from pc3d.utils.cli import hydra_message, user_error

    if any(a.startswith("-") for a in argv):  # --help, --cfg, --multirun, ...: hydra's own business
        return 0
    overrides = [a for a in argv if not a.lstrip("+~").startswith("hydra.")]
    try:
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
            cfg = compose(config_name="config", overrides=overrides)
    except HydraException as error:
        return user_error("train", ConfigError(hydra_message(error)))
    try:
        check_train_config(cfg)
    except Pc3dError as error:
        return user_error("train", error)
    return 0


STARTED = time.time()
START_FILES = {".hydra", "train.log", "config.yaml"}  # what a run folder holds before its first step


def remove_failed_start(run_dir: Path, output_dir: Path) -> None:
    """A run that failed on a user error before training leaves no folder behind: remove `run_dir` when it
    holds nothing but what this process wrote on starting (a folder of an earlier run is kept). Not called once
    training started: its train.log names what went wrong (the frames of non-finite steps, a bad frame)."""
    if os.environ.get("RANK", "0") != "0" or not run_dir.is_dir():
        return
    entries = list(run_dir.iterdir())
    if any(e.name not in START_FILES or e.stat().st_mtime < STARTED - 1 for e in entries):
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    for parent in run_dir.parents:  # <output_dir>/<experiment_name>/ when this run was its only one
        if parent == output_dir or not parent.is_relative_to(output_dir) or any(parent.iterdir()):
            break
        parent.rmdir()


def main() -> int:
    import hydra
    from omegaconf import DictConfig

    status = {"code": precheck(sys.argv[1:]), "training": False}
    if status["code"]:
        return status["code"]

    @hydra.main(version_base=None, config_path=str(ROOT / "configs"), config_name="config")
    def run(cfg: DictConfig) -> None:
        from hydra.core.hydra_config import HydraConfig

        from pc3d.engine import distributed, monitor, runner
        from pc3d.errors import Pc3dError
        from pc3d.utils.cli import user_error

        run_dir = Path(HydraConfig.get().runtime.output_dir)
        try:
            info = distributed.init_distributed(cfg.device)
            run_dir = Path(distributed.broadcast_object(str(run_dir)))
            monitor.setup_logging(run_dir, is_main=info.is_main)
            result = runner.train(cfg, run_dir, info, on_start=lambda: status.update(training=True))
            status["code"] = 128 + result.signal if result.interrupted else 0
        except Pc3dError as error:
            status["code"] = user_error("train", error)
        finally:
            distributed.destroy()
            monitor.close_logging()
        if status["code"] == 2 and not status["training"]:
            remove_failed_start(run_dir.resolve(), Path(cfg.output_dir).resolve())

    sys.argv = [sys.argv[0], *rank_overrides(sys.argv[1:])]
    run()
    return status["code"]


if __name__ == "__main__":
    sys.exit(main())
