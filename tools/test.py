"""Evaluate a trained checkpoint: metrics JSON + markdown table (printed), and the dataset's
predictions in its official submission format when the dataset provides a writer.

    python tools/test.py run_dir=outputs/toy/2026-01-01_12-00-00     # best.pt, else the newest save
    python tools/test.py ckpt=outputs/toy/.../checkpoints/step_00000256.pt split=test ema=false
    python tools/test.py run_dir=... dataset_root=data/kitti          # the dataset lives elsewhere now
    python tools/test.py run_dir=... eval_dataset=sim_sequence_flow    # another dataset config (configs/dataset/)
    python tools/test.py run_dir=... tta=flips                          # averaged over the scan's 4 mirror images
    python tools/test.py run_dir=... all_steps=true dataset_root=...    # every kept step_*.pt, and their table
    torchrun --nproc_per_node 2 tools/test.py run_dir=...              # sharded inference, gathered on rank 0

Outputs go to `<run dir>/test_<split>/` (or out_dir=...): metrics.json, metrics.md, predictions/ (written by the
dataset's `write_predictions`, which reads the predictions of its task: a SemanticKITTI dataset in mode "mos"
writes a mos model's `moving` flags in the SemanticKITTI-MOS submission layout,
predictions/sequences/SS/predictions/NNNNNN.label with 9 static / 251 moving, pc3d.eval.mos_writer).

Test-time augmentation: `tta=mirror|flips|turns|d4` runs the model on those views of every scan (pc3d.models.tta:
mirrors and quarter turns about the sensor, each voxelized afresh) at each of `tta_scales` (default [1.0]); a
segmentor's class probabilities and a MOS model's moving probabilities are averaged, a detector's boxes taken
back and fused, a flow model's vectors taken back and averaged. Results go to
<run dir>/test_<split>_tta-<views> unless out_dir is set.

`all_steps=true` scores every `step_*.pt` the run kept (OpenPCDet's --eval_all; `train.keep_last` decides how
many) into `<out dir>/step_<N>/` and prints the steps' table (the run's best_metric), also written as
`steps.md` / `steps.json`: on another world (`dataset_root=`) it shows how the steps compare on data that picked
none of them.

A pc3d error (a missing checkpoint, bad data, a setting of the wrong type: batch_size=abc) prints one line and
exits 2 (PC3D_DEBUG=1: the traceback); hydra answers an unknown key or a malformed override itself (exit 1).
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def check_settings(cfg) -> None:
    """ConfigError naming the key of a tools/test.py setting of the wrong type or range (before anything runs)."""
    from omegaconf import DictConfig

    from pc3d.errors import ConfigError

    def wrong(key: str, expected: str) -> ConfigError:
        return ConfigError(f"{key}: expected {expected}, got {cfg[key]!r} ({type(cfg[key]).__name__})")

    for key in ("ckpt", "run_dir", "split", "out_dir", "dataset_root", "eval_dataset"):
        if isinstance(cfg[key], bool) or (cfg[key] is not None and not isinstance(cfg[key], (str, int))):
            raise wrong(key, "a path or name")
    for key, low in (("batch_size", 1), ("workers", 0)):
        value = cfg[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise wrong(key, f"an integer >= {low} or null")
    for key in ("ema", "write_predictions", "all_steps"):
        if not isinstance(cfg[key], bool):
            raise wrong(key, "true or false")
    if cfg.tta is not None and not isinstance(cfg.tta, str):
        raise wrong("tta", "null or one of mirror, flips, turns, d4")
    if cfg.overrides is not None and not isinstance(cfg.overrides, DictConfig):
        raise wrong("overrides", "a mapping of dotted keys, e.g. 'overrides={train.workers: 0}'")
    device = cfg.device
    if not isinstance(device, str) or (device != "auto" and device.split(":")[0] not in ("cpu", "cuda")):
        raise wrong("device", "auto, cpu, cuda or cuda:N")
    if str(device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"device: {device} asked but CUDA is not available here")
    for key in ("out_dir",):
        if cfg[key] is not None and Path(str(cfg[key])).exists() and not Path(str(cfg[key])).is_dir():
            raise ConfigError(f"{key}: {cfg[key]} exists and is not a folder")


def augmentation(cfg):
    """(wrap, tag) for runner.test: the model inside pc3d.models.tta.TestTimeAugmented over the views of `tta`
    and `tta_scales` (the dataset's voxelizer voxelizing each view), or (None, None) without tta."""
    if cfg.tta is None:
        return None, None
    from omegaconf import OmegaConf

    from pc3d.models.tta import TestTimeAugmented, views

    scales = OmegaConf.to_container(cfg.tta_scales) if OmegaConf.is_config(cfg.tta_scales) else cfg.tta_scales
    scales = scales if isinstance(scales, list | tuple) else [scales]
    chosen = views(str(cfg.tta), scales)
    factors = list(dict.fromkeys(float(f) for f in scales))  # as given
    tag = f"tta-{cfg.tta}" + ("" if factors == [1.0] else "-x" + "-".join(f"{f:g}" for f in factors))

    def wrap(model, dataset):
        collate = getattr(dataset, "collate_fn", None)
        return TestTimeAugmented(model, getattr(collate, "voxelizer", None), chosen)

    return wrap, tag


def main() -> int:
    import hydra
    from omegaconf import DictConfig, OmegaConf

    status = {"code": 0}

    @hydra.main(version_base=None, config_path=str(ROOT / "configs"), config_name="test")
    def run(cfg: DictConfig) -> None:
        from pc3d.engine import distributed, monitor, runner
        from pc3d.errors import ConfigError, Pc3dError
        from pc3d.utils.cli import user_error

        try:
            check_settings(cfg)
        except Pc3dError as error:
            status["code"] = user_error("test", error)
            return
        info = distributed.init_distributed(cfg.device)
        monitor.setup_logging(None, is_main=info.is_main)
        try:
            wrap, tag = augmentation(cfg)
            if cfg.all_steps and cfg.run_dir is None:
                raise ConfigError("all_steps=true scores the steps a run kept: give run_dir=<training run folder>")
            ckpt = runner.find_checkpoint(None if cfg.ckpt is None else str(cfg.ckpt),
                                          None if cfg.run_dir is None else str(cfg.run_dir))
            overrides = {} if cfg.overrides is None else OmegaConf.to_container(cfg.overrides, resolve=True)
            if cfg.dataset_root is not None:
                overrides["dataset.root"] = str(cfg.dataset_root)
            split = None if cfg.split is None else str(cfg.split)
            dataset, out_dir = None, cfg.out_dir
            if cfg.eval_dataset is not None:
                sys.path.insert(0, str(ROOT / "tools"))
                from _common import dataset_config

                dataset = dataset_config(str(cfg.eval_dataset))
                split = split or dataset.get("split")  # the other dataset's own split names
                if out_dir is None:
                    out_dir = runner.default_out_dir(runner.run_dir_of(Path(ckpt)), str(cfg.eval_dataset), tag)
            settings = dict(info=info, split=split, out_dir=out_dir, batch_size=cfg.batch_size, workers=cfg.workers,
                            use_ema=cfg.ema, write_predictions=cfg.write_predictions, overrides=overrides,
                            dataset=dataset, wrap=wrap, tag=tag)
            if cfg.all_steps:
                runner.test_steps(str(cfg.run_dir), **settings)
            else:
                runner.test(ckpt, **settings)
        except Pc3dError as error:
            status["code"] = user_error("test", error)
        finally:
            distributed.destroy()
            monitor.close_logging()

    run()
    return status["code"]


if __name__ == "__main__":
    sys.exit(main())
