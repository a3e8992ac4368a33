"""`tools/bench.py seg`: training steps of the simulated-SemanticKITTI segmentation recipes, timed in turn.

Workload: each recipe's model, optimizer and precision as `tools/train.py experiment=<recipe>` builds them
(seeded weights), one training step (forward under the recipe's autocast, backward, optimizer step) on
batches of the recipe's batch size from a small simulated SemanticKITTI sequence written to a temporary
folder and read through the recipe's dataset config (augmentations included). Batches are collated before
the clock starts, so the rows time the model, not the loader (the recipes load data the same way). Every
round runs each recipe once on the same batch, in turn: on a shared host the speed drifts 10-20 % between
minutes, and only steps timed in alternation compare. The reference row is the dense U-Net in float32;
speedup = its median step / the row's (above 1: more steps per second).
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ("sim_semantickitti_seg", "fp32")
# lim_full_sim_semantickitti: the separable U-Net at twice the widths (the label-efficient recipes' model)
RECIPES = (REFERENCE, ("sim_semantickitti_ds_seg", "fp32"), ("lim_full_sim_semantickitti", "fp32"),
           ("sim_semantickitti_seg", "bf16"), ("sim_semantickitti_ds_seg", "bf16"))


def _recipe(experiment: str, root: Path):
    """(config, model, optimizer) of `experiment` with its dataset read from `root`."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from pc3d.engine.optim import param_groups

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        cfg = compose("config", overrides=[f"experiment={experiment}", f"dataset.root={root}", "dataset.sequences=all"])
    torch.manual_seed(0)
    model = instantiate(cfg.model, _convert_="all").train()
    return cfg, model, instantiate(cfg.optim, _convert_="all")(param_groups(model))


def _step(model, optimizer, batch, precision: str) -> None:
    from pc3d.engine.optim import autocast

    with autocast(precision, torch.device("cpu")):
        loss = model(batch)["loss"]
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if callable(after := getattr(model, "after_optimizer_step", None)):
        after()  # as the trainer does (a mean teacher's EMA step is part of its training step)


def run_seg(timed=None, quick: bool = False) -> list[dict]:
    from omegaconf import OmegaConf

    from pc3d.engine.runner import build_dataset
    from pc3d.sim.api import simulate_dataset

    rounds, warmup = (3, 1) if quick else (12, 2)
    with tempfile.TemporaryDirectory() as tmp:
        root = simulate_dataset("semantickitti", Path(tmp), frames=8, seed=0, sequence_length=8)
        built = {recipe: _recipe(recipe[0], root) for recipe in RECIPES}
        cfg = built[REFERENCE][0]
        data = build_dataset(cfg.dataset, cfg.splits.train, training=True)
        size = int(cfg.train.batch_size)
        shared = ("train.batch_size", "dataset.voxel_size", "dataset.point_cloud_range")
        for c, _, _ in built.values():  # one batch serves every recipe only if they batch and voxelize alike
            differ = [k for k in shared if OmegaConf.select(c, k) != OmegaConf.select(cfg, k)]
            if differ:
                raise ValueError(f"{c.experiment_name} differs from {REFERENCE[0]} in {differ}")
        times: dict[tuple, list[float]] = {recipe: [] for recipe in RECIPES}
        points = []  # of the timed rounds' batches (not the warm-up's)
        for r in range(warmup + rounds):
            samples = [data[(r * size + i) % len(data)] for i in range(size)]
            if r >= warmup:
                points.append(sum(len(s["points"]) for s in samples))
            for recipe, (_, model, optimizer) in built.items():
                batch = data.collate_fn(samples)  # a fresh batch per model: a forward may add keys to it
                start = time.perf_counter()
                _step(model, optimizer, batch, recipe[1])
                if r >= warmup:
                    times[recipe].append(time.perf_counter() - start)
    reference = statistics.median(times[REFERENCE])
    rows = []
    for (experiment, precision), t in times.items():
        model = built[(experiment, precision)][1]
        step = statistics.median(t)
        rows.append({"case": f"{experiment}, {precision}: training step", "pc3d_s": step,
                     "ref": f"{REFERENCE[0]}, {REFERENCE[1]}", "ref_s": reference, "speedup": reference / step,
                     "steps_per_s": 1.0 / step, "parameters": sum(p.numel() for p in model.parameters()),
                     "batch": f"{size} scans, {statistics.median(points):,.0f} points (median)",
                     "rounds": rounds, "threads": torch.get_num_threads()})
    return rows


if __name__ == "__main__":
    for row in run_seg(quick=True):
        print(row)
