"""Every experiment config, on small simulated data in its dataset's layout: one training step (a loss dict
with a finite scalar `loss` that back-propagates) and one evaluation batch (predictions that pass
check_prediction, scored by the dataset's hook and written by its write_predictions where they cover the
split)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from pc3d.data.create import create_data
from pc3d.data.frame_selection import write_frame_list
from pc3d.engine.evaluator import attach_measurements, measuring
from pc3d.engine.runner import build_dataset, build_evaluator
from pc3d.models.contract import check_prediction, task_of
from pc3d.models.tta import TestTimeAugmented, views
from pc3d.sim.api import simulate_dataset

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
LAYOUT = {"KittiDataset": "kitti", "WaymoDataset": "waymo", "WaymoSegmentationDataset": "waymo",
          "SemanticKittiDataset": "semantickitti", "ScanNetDataset": "scannet", "SceneFlowDataset": "sceneflow",
          "SequenceFlowDataset": "semantickitti",
          "ModelNet40": "modelnet40"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sim")
    simulate_dataset("kitti", root / "kitti", frames=4, seed=0, columns=512)
    create_data("kitti", root / "kitti")
    simulate_dataset("waymo", root / "waymo", frames=2, seed=0, columns=512, sequence_length=1)
    create_data("waymo", root / "waymo")
    create_data("waymo", root / "waymo", sweeps=2)  # centerpoint_sim_waymo_2sweeps samples two-sweep objects
    simulate_dataset("semantickitti", root / "semantickitti", frames=2, seed=0, columns=512, sequence_length=2)
    for method in ("st_rfd", "uniform"):  # the label-efficient recipes' frame lists: one labelled scan
        write_frame_list(root / "semantickitti" / "frame_lists" / f"{method}_5.txt", [(0, 1)])
    simulate_dataset("scannet", root / "scannet", frames=5, seed=0)
    simulate_dataset("sceneflow_ft3d", root / "sceneflow", frames=3, seed=0)  # 2 train, 1 val pairs
    simulate_dataset("modelnet40", root / "modelnet40", frames=32, seed=0)  # 16 train, 16 test shapes
    return root


def compose_on(experiment: str, data: Path):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        cfg = compose("config", overrides=[f"experiment={experiment}"])
    layout = LAYOUT.get(cfg.dataset._target_.rpartition(".")[2])
    overrides = [f"experiment={experiment}", "train.batch_size=2", *smaller_range(cfg), *coarser_indoor_voxels(cfg),
                 *coarser_cylinders(cfg)]
    if layout:
        overrides.append(f"dataset.root={data / layout}")
    if layout == "semantickitti":
        overrides.append("dataset.sequences=[0]")
        if cfg.dataset.get("full_windows"):  # the two-scan sequence holds no full window of 10 scans
            overrides.append("dataset.full_windows=false")
    if layout and "num_points" in cfg.dataset:  # 1,024 points show the same code path as 8,192 / 10,000
        overrides.append("dataset.num_points=1024")
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return compose("config", overrides=overrides)


def smaller_range(cfg) -> list[str]:
    """A full-size outdoor detection grid (Waymo's 468 x 468 pillars at 192 channels, 1504 x 1504 voxels) costs
    a minute per step here: crop x / y to about 30 m (a whole number of 32-cell blocks, so every stride of the
    model still divides the grid; KITTI's forward-only x stays forward). The model is built from the cropped
    range as from any other; segmentation ranges are left alone."""
    rng, size = cfg.dataset.get("point_cloud_range"), cfg.dataset.get("voxel_size")
    detection = LAYOUT.get(cfg.dataset._target_.rpartition(".")[2]) in ("kitti", "waymo")
    if not detection or rng is None or size is None or (rng[3] - rng[0]) / size[0] <= 400:
        return []
    half = [math.ceil(15 / (16 * v)) * 16 * v for v in size[:2]]
    x0 = rng[0] if rng[0] >= 0 else -half[0]
    crop = [x0, -half[1], rng[2], x0 + 2 * half[0], half[1], rng[5]]
    return [f"dataset.point_cloud_range=[{','.join(f'{c:.4f}' for c in crop)}]"]


def coarser_indoor_voxels(cfg) -> list[str]:
    """ScanNet's 0.01 / 0.02 m grids (TR3D's, Pointcept's) cost a minute and more per step here: test the real
    recipe on 0.04 m voxels, which tile its range exactly (every stride still divides the grid); the 0.05 m
    simulated recipes cover the CPU size."""
    size = cfg.dataset.get("voxel_size")
    indoor = LAYOUT.get(cfg.dataset._target_.rpartition(".")[2]) == "scannet"
    if not indoor or size is None or min(size) >= 0.04:
        return []
    return ["dataset.voxel_size=[0.04,0.04,0.04]"]


def coarser_cylinders(cfg) -> list[str]:
    """Cylinder3D's 480 x 360 x 32 grid keeps thousands of sites at 512 channels four levels down (half a minute a
    step here): test the real recipe on a quarter of the cells along rho and phi (the network has no
    grid-sized parts); the simulated recipe covers the CPU size."""
    voxelizer = cfg.dataset.get("voxelizer") or {}
    if not str(voxelizer.get("_target_", "")).endswith("CylindricalVoxelizer"):
        return []
    n_rho, n_phi, n_z = voxelizer.grid_size
    if n_rho * n_phi * n_z <= 4_000_000:
        return []
    return [f"dataset.voxelizer.grid_size=[{n_rho // 4},{n_phi // 4},{n_z}]"]


def num_points(task: str, batch: dict, b: int) -> int | None:
    """The points sample b's per-point output must cover (segmentation: every point of the sample; mos: its
    current scan; flow: its first cloud)."""
    if task == "mos" and "num_current_points" in batch:
        return int(batch["num_current_points"][b])
    if task not in ("segmentation", "mos", "flow"):
        return None
    offsets = batch["point_offsets"]
    return int(offsets[b + 1] - offsets[b])


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_trains_one_step_and_evaluates(experiment, data, tmp_path):
    cfg = compose_on(experiment, data)
    torch.manual_seed(0)
    model = instantiate(cfg.model, _convert_="all")
    if getattr(model, "fixed_teacher", False):  # self-training starts from a trained run (init_from): the
        model.load_state_dict(model.pretrained_state(model.student.state_dict()))  # student's weights stand in
    task = task_of(model)
    train_set = build_dataset(cfg.dataset, cfg.splits.train, training=True)
    samples = [train_set[i % len(train_set)] for i in range(2)]
    model.train()
    losses = model(train_set.collate_fn(samples))
    assert torch.isfinite(losses["loss"]) and losses["loss"].ndim == 0
    losses["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())

    val_set = build_dataset(cfg.dataset, cfg.splits.get("val") or cfg.splits.train, training=False)
    # the whole split where it is small (a hook scores a split: ModelNet's 16 test shapes), else two samples
    samples = [val_set[i] for i in range(len(val_set) if len(val_set) <= 16 else 2)]
    batch = val_set.collate_fn(samples)
    model.eval()
    with torch.no_grad(), measuring(model):
        predictions = model(batch)
    attach_measurements(model, predictions)  # as the engine's predict does (spiking models count energy)
    assert len(predictions) == len(samples)
    for b, pred in enumerate(predictions):
        pred = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in pred.items()}
        check_prediction(task, pred, num_points(task, batch, b))
    if task != "classification":  # every other task takes test-time augmentation (tools/test.py tta=...)
        with torch.no_grad():
            augmented = TestTimeAugmented(model, val_set.collate_fn.voxelizer, views("mirror"))(batch)
        for b, pred in enumerate(augmented):
            check_prediction(task, pred, num_points(task, batch, b))
    hook = build_evaluator(cfg)
    if hook is not None:
        metrics = hook(val_set, predictions)
        assert metrics and all(np.isscalar(v) or isinstance(v, dict) for v in metrics.values())
    writer = getattr(val_set, "write_predictions", None)
    if callable(writer) and len(samples) == len(val_set):  # tools/test.py's files, for the split it predicted
        written = Path(writer([{k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in pred.items()}
                               for pred in predictions], tmp_path / "predictions"))
        assert any(f.is_file() for f in written.rglob("*")), written
