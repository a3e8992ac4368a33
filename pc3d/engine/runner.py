"""From a hydra config to a trained or evaluated model: what tools/train.py and tools/test.py run.

Config keys read here (configs/config.yaml documents them): `dataset` (a `_target_` taking
`split=`, with an optional `evaluator`: the `pc3d.eval.hooks` hook `(dataset, predictions) -> metrics`
of its benchmark), `splits.{train,val,test}`, `model`, `optim` (partial optimizer), `schedule` (partial
schedule or null), `train`
(pc3d.engine.settings.TrainSettings), `seed`, `device`, `threads`, `resume` (null | auto | checkpoint file or
run dir).

A run folder holds: `config.yaml` (resolved), `train.log`, `checkpoints/step_*.pt` + `best.pt`,
`metrics.json`, `tb/` (TensorBoard) and hydra's `.hydra/`. `tools/test.py` writes
`test_<split>/metrics.json`, `metrics.md` and the dataset's predictions beside them.
"""
from __future__ import annotations

import inspect
import json
import logging
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from pc3d_ops.threads import use_threads

from pc3d.engine import distributed
from pc3d.engine.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    load_model_state,
    load_weights,
    resolve_checkpoint,
    step_checkpoints,
)
from pc3d.engine.evaluator import evaluate
from pc3d.engine.monitor import metrics_table, write_json
from pc3d.engine.seeding import seed_everything
from pc3d.engine.settings import TrainSettings
from pc3d.engine.trainer import Trainer, TrainResult
from pc3d.errors import CheckpointError, ConfigError, Pc3dError

log = logging.getLogger(__name__)


def _instantiate(node, **kwargs):
    """hydra's instantiate, with its wrapping undone for the user: a pc3d error raised while building (a
    dataset naming its missing file) comes out as itself; any other failure to build a config node (a
    wrongly typed model argument) as a ConfigError naming the node's target and the cause."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as error:
        cause = error
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, Pc3dError):
            raise cause from error
        target = node.get("_target_", "?") if hasattr(node, "get") else "?"
        raise ConfigError(f"cannot build {target} from the config: {type(cause).__name__}: {cause}") from error


def resolved_config(cfg) -> dict:
    """The config as plain containers with every interpolation resolved."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else cfg


def resume_path(resume: str | None, run_dir: Path) -> Path | None:
    """`auto` -> the newest loadable checkpoint in this run dir (None when there is none)."""
    if resume in (None, "", False):
        return None
    if resume == "auto":
        return latest_checkpoint(run_dir / "checkpoints")
    return resolve_checkpoint(resume)


def apply_threads(cfg) -> None:
    """`threads: N` in the config -> torch and numba on N threads in this process (null: leave torch's
    default). numba's pool is launched here: launched later, by the first kernel, it would set torch's count
    back to one thread per core (`pc3d_ops.threads`)."""
    threads = cfg.get("threads")
    if threads:
        torch.set_num_threads(int(threads))
        use_threads(int(threads))


ENGINE_KEYS = ("evaluator", "mix_prob")  # keys of a dataset config that are the engine's, not dataset arguments


def build_dataset(node, split: str, training: bool):
    """The dataset of `split`, augmenting only when `training`: evaluating on a split named like a
    training split ('trainval') must not augment. Datasets without a `training` argument decide by split.
    `mix_prob` (Mix3D, pc3d.data.batch.Collate) goes to a training set's Collate; evaluation never mixes."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from pc3d.data.batch import Collate

    kwargs: dict[str, Any] = {"split": split}
    if "training" in inspect.signature(get_class(node["_target_"])).parameters:
        kwargs["training"] = training
    mix_prob = node.get("mix_prob") or 0.0
    if isinstance(mix_prob, bool) or not isinstance(mix_prob, (int, float)) or not 0 <= mix_prob <= 1:
        raise ConfigError(f"dataset.mix_prob must be a number in [0, 1], got {mix_prob!r}")
    if any(key in node for key in ENGINE_KEYS):  # resolve while still in the tree
        node = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k not in ENGINE_KEYS}
    dataset = _instantiate(node, **kwargs)
    if mix_prob and training:
        collate = getattr(dataset, "collate_fn", None)
        if not isinstance(collate, Collate):
            raise ConfigError(f"dataset.mix_prob needs a dataset collated by pc3d.data.batch.Collate; "
                              f"{type(dataset).__name__} has {type(collate).__name__}")
        collate.mix_prob = mix_prob
    return dataset


def build_evaluator(cfg):
    """The dataset config's evaluation hook (`dataset.evaluator`), or None: the dataset's own `evaluate`."""
    node = cfg.dataset.get("evaluator")
    return _instantiate(node) if node else None


def build_datasets(cfg) -> tuple[Any, Any]:
    train_set = build_dataset(cfg.dataset, cfg.splits.train, training=True)
    val_split = cfg.splits.get("val")
    return train_set, (build_dataset(cfg.dataset, val_split, training=False) if val_split else None)


_OPTIM_NUMBERS = ("lr", "weight_decay", "momentum", "eps")


def check_train_config(cfg) -> TrainSettings:
    """Every value of a training config that can be checked without building anything: the `train:`
    settings (types and ranges), `seed`, `threads`, `device`, the optimizer's numbers and a `resume` file. A
    ConfigError (or CheckpointError) names the key; tools/train.py calls this before hydra writes a run folder."""
    from omegaconf import OmegaConf

    def node(key):
        value = cfg.get(key)
        return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value

    settings = TrainSettings.from_config(node("train") or {})
    seed, threads = node("seed"), node("threads")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be a positive integer or null, got {threads!r}")
    optim = node("optim") or {}
    for key in _OPTIM_NUMBERS:
        value = optim.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"optim.{key} must be a finite number >= 0, got {value!r}")
    _dry_build_optimizer(cfg)
    distributed.resolve_device(node("device") or "auto")
    resume = node("resume")
    if resume not in (None, "", False, "auto"):
        load_checkpoint(resolve_checkpoint(str(resume)))  # an empty or foreign file fails here, not mid-build
    init_from = node("init_from")
    if init_from not in (None, "", False):
        load_weights(init_checkpoint(str(init_from)))
    return settings


def _dry_build_optimizer(cfg) -> None:
    """Build `optim` over one dummy parameter and `schedule` over it for 1,000 steps: an unknown key, a wrongly
    typed or out-of-range value is a ConfigError naming the section here, before a run folder exists (torch
    accepts a momentum or beta of 1 or more, which diverges)."""
    optim = cfg.get("optim")
    if optim is None:
        return
    for key in ("momentum", "betas"):
        values = optim.get(key)
        values = [] if values is None else list(values) if key == "betas" else [values]
        if any(isinstance(v, (int, float)) and not isinstance(v, bool) and not 0 <= v < 1 for v in values):
            raise ConfigError(f"optim.{key} must lie in [0, 1), got {values if key == 'betas' else values[0]!r}")
    optimizer = _built("optim", lambda: _instantiate(optim)([torch.nn.Parameter(torch.zeros(1))]))
    if cfg.get("schedule"):
        _built("schedule", lambda: _instantiate(cfg.schedule)(optimizer, total_steps=1000))


def _built(section: str, build: Callable[[], Any]) -> Any:
    """build(), with a TypeError / ValueError / ArithmeticError raised while building a config section turned into a
    ConfigError naming the section (pc3d errors pass as they are)."""
    try:
        return build()
    except Pc3dError:
        raise
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise ConfigError(f"{section}: {type(exc).__name__}: {exc}") from None


def init_checkpoint(init_from: str) -> Path:
    """The checkpoint an `init_from` names: a file as given; a run dir's best.pt, else its newest save."""
    return find_checkpoint(None, init_from) if Path(init_from).is_dir() else resolve_checkpoint(init_from)


def init_weights(model: torch.nn.Module, path: Path) -> None:
    """Start `model` from the weights of checkpoint `path` (its EMA weights when it has them), loaded strictly; a
    model with a `pretrained_state(state) -> state_dict` method maps them first (a mean teacher puts a supervised
    run's weights into its student and its teacher)."""
    state = load_weights(path)
    if hasattr(model, "pretrained_state"):
        state = model.pretrained_state(state)
    load_model_state(model, state, path)
    log.info("initialised the model from %s", path)


def train(cfg, run_dir: str | os.PathLike, info: distributed.DistInfo,
          on_start: Callable[[], None] | None = None) -> TrainResult:
    """Build every part from `cfg` and train; rank 0 writes `config.yaml` into `run_dir`. `on_start` is called
    once everything is built, as training starts."""
    from omegaconf import OmegaConf

    run_dir = Path(run_dir)
    settings = check_train_config(cfg)  # a bad setting or resume fails before anything is written
    config = resolved_config(cfg)
    resume = resume_path(cfg.get("resume"), run_dir)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    apply_threads(cfg)
    seed_everything(int(cfg.seed))  # identical initial weights on every rank
    train_set, val_set = build_datasets(cfg)
    model = _instantiate(cfg.model)
    if cfg.get("init_from") and resume is None:
        init_weights(model, init_checkpoint(str(cfg.init_from)))
    trainer = Trainer(
        model, train_set, optimizer=_instantiate(cfg.optim), settings=settings, run_dir=run_dir,
        schedule=_instantiate(cfg.schedule) if cfg.get("schedule") else None, val_set=val_set,
        evaluator=build_evaluator(cfg), info=info,
        seed=int(cfg.seed), config=config)
    if on_start is not None:
        on_start()
    return trainer.fit(resume=resume)


def find_checkpoint(ckpt: str | None, run_dir: str | None) -> Path:
    """`ckpt` as given, else `<run_dir>/checkpoints/best.pt` when it loads, else the newest save there."""
    if ckpt:
        return resolve_checkpoint(ckpt)
    if not run_dir:
        raise ConfigError("tools/test.py needs ckpt=<checkpoint file> or run_dir=<training run folder>")
    best = Path(run_dir) / "checkpoints" / "best.pt"
    if best.is_file():
        try:
            load_checkpoint(best)
            return best
        except CheckpointError as exc:
            log.warning("skipping %s", exc)
    return resolve_checkpoint(run_dir)


def load_trained(ckpt_path: str | os.PathLike, *, use_ema: bool = True, overrides: Mapping | None = None,
                 dataset: Mapping | None = None):
    """(model with the checkpoint's weights (EMA ones when present and use_ema), the run's config with
    `overrides` (dotted keys) applied, the checkpoint dict) of a tools/train.py checkpoint.

    dataset: another dataset config replacing the run's (evaluate on other data), which keeps the run's
    ``voxelizer``, ``voxel_size`` and ``point_cloud_range`` (the grid the model was built for); applied before
    the overrides."""
    from pc3d.models.contract import task_of

    cfg, ckpt = stored_config(ckpt_path, overrides=overrides, dataset=dataset)
    seed_everything(int(cfg.seed))
    model = _instantiate(cfg.model)
    task_of(model)
    load_model_state(model, ckpt["ema"]["model"] if use_ema and ckpt.get("ema") else ckpt["model"], ckpt_path)
    return model, cfg, ckpt


def stored_config(ckpt_path: str | os.PathLike, *, overrides: Mapping | None = None, dataset: Mapping | None = None):
    """(the config stored in a tools/train.py checkpoint with `dataset` and `overrides` applied as load_trained
    applies them, the checkpoint dict)."""
    from omegaconf import OmegaConf

    ckpt_path = Path(ckpt_path)
    ckpt = load_checkpoint(ckpt_path)
    if not ckpt.get("config"):
        raise CheckpointError(f"{ckpt_path}: has no stored config; it was not written by tools/train.py")
    cfg = OmegaConf.create(ckpt["config"])
    if dataset is not None:
        kept = {k: cfg.dataset[k] for k in ("voxelizer", "voxel_size", "point_cloud_range") if k in cfg.dataset}
        cfg.dataset = OmegaConf.merge(OmegaConf.create(dict(dataset)), kept)
    for key, value in (overrides or {}).items():
        OmegaConf.update(cfg, key, value, force_add=True)
    lacking = [key for key in ("model", "dataset", "seed", "splits", "train") if key not in cfg]
    if lacking:
        raise CheckpointError(f"{ckpt_path}: its stored config lacks {lacking}; it was not written by tools/train.py")
    return cfg, ckpt


def chosen_on_these_data(ckpt_path: Path, ckpt: Mapping, cfg, split: str) -> list[dict] | None:
    """The run's evaluations (step and best_metric) when `ckpt_path` is a best.pt that the run picked by its score
    on the very data now scored, from among evaluations that went on after it; None otherwise.

    Such a score is the best of several on the same data: it overstates what the model does on data it was not
    picked on (a scan of another world, or the last step's score). The same data: the run's val split with the
    stored dataset config unchanged (no dataset_root, no overrides of dataset keys, no eval_dataset). The
    evaluations come from the run folder's metrics.json (written at the end of training)."""
    from omegaconf import OmegaConf

    best, stored = ckpt.get("best") or {}, ckpt.get("config") or {}
    metric = best.get("metric")
    if ckpt_path.name != "best.pt" or not metric or split != (stored.get("splits") or {}).get("val"):
        return None
    if OmegaConf.to_container(cfg.dataset, resolve=True) != stored.get("dataset"):
        return None
    record = ckpt_path.parent.parent / "metrics.json"
    try:
        history = json.loads(record.read_text()).get("history") or []
    except (OSError, ValueError):
        return None
    scored = [{"step": h["step"], metric: h[metric]} for h in history if isinstance(h, dict) and metric in h]
    if len(scored) < 2 or scored[-1]["step"] == best.get("step"):
        return None
    return scored


def test(ckpt_path: str | os.PathLike, *, info: distributed.DistInfo, split: str | None = None,
         out_dir: str | os.PathLike | None = None, batch_size: int | None = None, workers: int | None = None,
         use_ema: bool = True, write_predictions: bool = True, overrides: Mapping | None = None,
         dataset: Mapping | None = None, wrap: Callable | None = None, tag: str | None = None,
         subdir: str | None = None) -> dict | None:
    """Evaluate a checkpoint on `split` (default: the config's test split) with the config stored in it.

    Writes `<out_dir>/metrics.json`, `metrics.md` and, when the dataset has `write_predictions`,
    its predictions under `<out_dir>/predictions`. Returns the metrics on rank 0 (None elsewhere).
    overrides: dotted keys applied to the stored config (e.g. {"dataset.root": "data/kitti"}). dataset: another
    dataset config replacing the run's (see load_trained). wrap: `wrap(model, dataset) -> model` evaluated in the
    model's place (tools/test.py's test-time augmentation, pc3d.models.tta); tag: what the wrapper does, recorded
    in metrics.json and the table's title and appended to the default out_dir (test_<split>_<tag>). subdir: a
    folder inside out_dir (or the default one) that receives this checkpoint's files (test_steps: step_<N>).
    """
    ckpt_path = Path(ckpt_path)
    model, cfg, ckpt = load_trained(ckpt_path, use_ema=use_ema, overrides=overrides, dataset=dataset)
    split = scored_split(cfg, split)
    run_dir = run_dir_of(ckpt_path)
    out_dir = Path(out_dir) if out_dir else default_out_dir(run_dir, split, tag)
    out_dir = out_dir / subdir if subdir else out_dir
    apply_threads(cfg)
    dataset = build_dataset(cfg.dataset, split, training=False)
    if wrap is not None:
        model = wrap(model, dataset)
    model.to(info.device)
    train_cfg = cfg.train
    evaluator = build_evaluator(cfg)
    metrics, predictions = evaluate(
        model, dataset, batch_size=batch_size or train_cfg.get("val_batch_size") or train_cfg.batch_size,
        workers=train_cfg.workers if workers is None else workers, info=info,
        precision=train_cfg.get("precision", "fp32"), seed=int(cfg.seed), evaluator=evaluator)
    if not info.is_main:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    step = int(ckpt["progress"]["step"])
    title = f"{cfg.get('experiment_name', 'run')} · {scored_on(cfg, split)} · {ckpt_path.name} (step {step})" + (
        f" · {tag}" if tag else "")
    table = metrics_table(metrics, title)
    extra = getattr(evaluator, "last_table", None)
    if isinstance(extra, str) and extra:
        table += "\n\n" + extra
    chosen = chosen_on_these_data(ckpt_path, ckpt, cfg, split)
    if chosen:
        metric = ckpt["best"]["metric"]
        scores = ", ".join(f"step {c['step']}: {c[metric]:.4g}" for c in chosen)
        table += (f"\n\nNote: {ckpt_path.name} is step {step}, picked by its {metric} on these data from the run's "
                  f"evaluations ({scores}): its score here is the best of them, not one for new data; "
                  "ckpt=<run>/checkpoints/step_<N>.pt scores another step, dataset_root= another world.")
    write_json(out_dir / "metrics.json", {"checkpoint": str(ckpt_path), "split": split, "step": step,
                                          "ema": bool(use_ema and ckpt.get("ema")), "tag": tag,
                                          "chosen_on_these_data": chosen, "metrics": metrics})
    (out_dir / "metrics.md").write_text(table + "\n")
    writer = getattr(dataset, "write_predictions", None)
    if write_predictions and callable(writer):
        written = writer(predictions, out_dir / "predictions")
        log.info("predictions written to %s", written)
    print(table, flush=True)
    return metrics


def run_dir_of(ckpt_path: Path) -> Path:
    """The run folder of a checkpoint: `<run>/checkpoints/<name>.pt` -> `<run>`; a file elsewhere -> its folder."""
    return ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent


def scored_split(cfg, split: str | None) -> str:
    """`split` when given, else the run's test split, else its val split."""
    return split or cfg.splits.get("test") or cfg.splits.val


def scored_on(cfg, split: str) -> str:
    """The split and, for data on disk, the dataset root it was read from (tables' titles)."""
    root = cfg.dataset.get("root")
    return f"{split} of {root}" if root else split


def default_out_dir(run_dir: Path, name: str, tag: str | None) -> Path:
    """Where tools/test.py writes unless told: `<run dir>/test_<name>` (the split, or the eval_dataset), `_<tag>`
    appended for a wrapped model."""
    return run_dir / (f"test_{name}_{tag}" if tag else f"test_{name}")


def test_steps(run_dir: str | os.PathLike, *, info: distributed.DistInfo, out_dir: str | os.PathLike | None = None,
               **kwargs) -> list[dict] | None:
    """`test` on every `step_*.pt` the run kept (OpenPCDet's --eval_all), oldest first, each into `step_<N>/` of
    its out_dir; then a table of the steps (the run's best_metric and the evaluated split) printed and written
    beside them as `steps.md` / `steps.json`. best.pt (a copy of one step, perhaps no longer kept) is not scored.

    What a run's own evaluations cannot show: how each kept step does on other data (`dataset_root=`, another
    world), so that a step is chosen, or a figure reported, on data that did not pick it. kwargs: as `test`.
    Returns [{"step", "checkpoint", "metrics"}] on rank 0 (None elsewhere)."""
    run_dir = Path(run_dir)
    kept = step_checkpoints(run_dir / "checkpoints")
    if not kept:
        raise CheckpointError(f"{run_dir}: no checkpoints/step_*.pt to score")
    cfg, _ = stored_config(kept[-1][1], overrides=kwargs.get("overrides"), dataset=kwargs.get("dataset"))
    split, tag = scored_split(cfg, kwargs.pop("split", None)), kwargs.get("tag")
    base = Path(out_dir) if out_dir else default_out_dir(run_dir, split, tag)
    rows = []
    for step, path in kept:
        metrics = test(path, info=info, split=split, out_dir=base, subdir=path.stem, **kwargs)
        rows.append({"step": step, "checkpoint": str(path), "metrics": metrics})
    if not info.is_main:
        return None
    metric = cfg.train.get("best_metric")
    table = steps_table(rows, metric, f"{cfg.get('experiment_name', 'run')} · {scored_on(cfg, split)} · every kept step"
                        + (f" · {tag}" if tag else ""))
    write_json(base / "steps.json", {"split": split, "tag": tag, "metric": metric, "steps": rows})
    (base / "steps.md").write_text(table + "\n")
    print(table, flush=True)
    return rows


def steps_table(rows: list[dict], metric: str | None, title: str) -> str:
    """Markdown: one row per step with `metric` (all scalar metrics when None or absent, at most six)."""
    names = [metric] if metric and all(metric in r["metrics"] for r in rows) else [
        k for k, v in rows[0]["metrics"].items() if isinstance(v, int | float)][:6]
    lines = [f"**{title}**", "", "| step | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for r in rows:
        lines.append(f"| {r['step']} | " + " | ".join(f"{r['metrics'][n]:.4g}" for n in names) + " |")
    return "\n".join(lines)
