"""Helpers shared by the tools/ scripts (not part of the pc3d package)."""
from __future__ import annotations

import statistics
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
BENCHMARK_SWEEP = SHARED / "samples" / "scan360" / "benchmark-pc.npz"


def load_benchmark_sweep() -> tuple[np.ndarray, str]:
    """The standard 360-degree sweep (float32 [N, 3]); a synthetic sweep where it is absent."""
    if BENCHMARK_SWEEP.exists():
        return np.load(BENCHMARK_SWEEP)["pc"].astype(np.float32), str(BENCHMARK_SWEEP)
    rng = np.random.default_rng(0)
    azimuth = rng.uniform(-np.pi, np.pi, 200_000)
    distance = rng.uniform(3.0, 70.0, 200_000)
    z = rng.normal(-1.7, 0.3, 200_000)
    points = np.stack([distance * np.cos(azimuth), distance * np.sin(azimuth), z], 1)
    return points.astype(np.float32), "a synthetic sweep (../shared/samples is absent)"


def dataset_config(name: str) -> dict:
    """configs/dataset/<name>.yaml as a dict (ConfigError listing the dataset configs when it does not exist)."""
    from omegaconf import OmegaConf

    from pc3d.errors import ConfigError

    path = ROOT / "configs" / "dataset" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"no dataset config {name!r} ({path}); dataset configs: {', '.join(known)}")
    return OmegaConf.to_container(OmegaConf.load(path))


def experiment_checkpoint(folder: Path, experiment: str, *overrides: str) -> Path:
    """A tools/train.py-style checkpoint of an experiment config's untrained model (seeded), under
    <folder>/<experiment>/checkpoints; overrides are hydra overrides (e.g. dataset.root=...). The fixture of
    tests and of tools/probe_bad_input.py: everything that reads a run can be exercised without training."""
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from pc3d.engine.checkpoint import FORMAT, VERSION, atomic_save
    from pc3d.engine.runner import resolved_config

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        cfg = compose("config", overrides=[f"experiment={experiment}", *overrides])
    torch.manual_seed(0)
    model = instantiate(cfg.model, _convert_="all")
    path = folder / experiment / "checkpoints" / "step_00000001.pt"
    atomic_save({"format": FORMAT, "version": VERSION, "model": model.state_dict(), "config": resolved_config(cfg),
                 "progress": {"step": 1, "epoch": 0}}, path)
    return path


def alternated(fns, repeats: int = 5, warmup: int = 1) -> list[float]:
    """Median wall time in seconds of each of fns, called in turn within every repeat: variants compared
    by a ratio then share the host's speed of the moment (on a shared host it drifts 10-20 % between
    minutes, more than most of the differences measured)."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            t.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def spconv_missing() -> str | None:
    """None where spconv imports (directly and as pc3d's "spconv" backend), else what a row against it puts in its
    reference column instead ("spconv unavailable: ModuleNotFoundError"): the row keeps pc3d's side, as the
    Open3D-ML rows do where Open3D-ML is missing."""
    from pc3d.sparse.backend import spconv_module

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import spconv.pytorch  # noqa: F401
        spconv_module()
    except Exception as err:  # noqa: BLE001  (a missing install, or one broken against this torch)
        return f"spconv unavailable: {type(err).__name__}"
    return None


def versus(ours: float, ref: float | None, missing: str | None = None, name: str = "spconv CPU") -> dict:
    """A row's reference columns: `name`, its time and the speed-up ref / ours; where the reference is missing
    (`missing`: why, see spconv_missing) that reason alone."""
    if missing:
        return {"ref": missing}
    return {"ref": name, "ref_s": ref, "speedup": ref / max(ours, 1e-9)}


def section_markdown(section: dict) -> str:
    """A table a suite adds beside its rows ({"title", "columns": {key: heading}, "rows"}, carried by the row that
    sums it up, bench.py renders it after the suite's table): floats in 3-digit scientific notation."""
    columns = section["columns"]
    lines = [f"### {section['title']}", "", "| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    for r in section["rows"]:
        cells = [f"{r.get(k):.2e}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rel_diff(a, b) -> float:
    """max |a - b| / max |b| of two torch tensors (detached)."""
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


def rows_in_site_order(coords, feats):
    """feats' rows in (batch, z, y, x) order of their int coords: engines that order output sites
    differently then compare row by row."""
    import torch

    order = np.lexsort(coords.long().numpy().T[::-1])
    return feats[torch.from_numpy(order)]
