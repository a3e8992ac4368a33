"""Evaluate a trained checkpoint: metrics JSON + markdown table (printed), and the dataset's
predictions in its official submission format when the dataset provides a writer.

    python tools/test.py run_dir=outputs/toy/2026-01-01_12-00-00     # best.pt, else the newest save
    python tools/test.py ckpt=outputs/toy/.../checkpoints/step_00000256.pt split=test ema=false
    python tools/test.py run_dir=... dataset_root=data/kitti          # the dataset lives elsewhere now
    torchrun --nproc_per_node 2 tools/test.py run_dir=...              # sharded inference, gathered on rank 0

Outputs go to `<run dir>/test_<split>/` (or out_dir=...): metrics.json, metrics.md, predictions/. A pc3d error
(a missing checkpoint, bad data) prints one line and exits 2 (PC3D_DEBUG=1: the traceback).
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    import hydra
    from omegaconf import DictConfig, OmegaConf

    status = {"code": 0}

    @hydra.main(version_base=None, config_path=str(ROOT / "configs"), config_name="test")
    def run(cfg: DictConfig) -> None:
        from pc3d.engine import distributed, monitor, runner
        from pc3d.errors import Pc3dError
        from pc3d.utils.cli import user_error

        info = distributed.init_distributed(cfg.device)
        monitor.setup_logging(None, is_main=info.is_main)
        try:
            ckpt = runner.find_checkpoint(cfg.ckpt, cfg.run_dir)
            overrides = OmegaConf.to_container(cfg.overrides, resolve=True)
            if cfg.dataset_root is not None:
                overrides["dataset.root"] = str(cfg.dataset_root)
            runner.test(ckpt, info=info, split=cfg.split, out_dir=cfg.out_dir, batch_size=cfg.batch_size,
                        workers=cfg.workers, use_ema=cfg.ema, write_predictions=cfg.write_predictions,
                        overrides=overrides)
        except Pc3dError as error:
            status["code"] = user_error("test", error)
        finally:
            distributed.destroy()
            monitor.close_logging()

    run()
    return status["code"]


if __name__ == "__main__":
    sys.exit(main())
