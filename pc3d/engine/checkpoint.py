"""Checkpoints: atomic writes, last-K rotation, the best one, and safe loading.

A checkpoint is a dict written by `torch.save` and read back with `torch.load(weights_only=True)`
(no arbitrary pickle): only tensors, numbers, strings, lists and dicts.

    {"format": "pc3d-checkpoint", "version": 1,
     "model": state_dict, "optimizer": ..., "scheduler": ..., "scaler": ... | None, "ema": ... | None,
     "rng": [per-rank rng_state(), ...],            # pc3d.engine.seeding
     "progress": {"epoch", "batch_in_epoch", "step", "seed", "world_size"},
     "best": {"metric", "mode", "value", "step"}, "metrics": {...}, "config": {...resolved config}}

Writing is atomic: a temporary file in the same folder, flushed and fsynced, then `os.replace`d
onto the final name (and the folder fsynced), so a crash or a full disk never leaves a partial
file under a checkpoint's name. `CheckpointManager` keeps `step_XXXXXXXX.pt` for the last K saves
plus `best.pt` (a hard link to, or copy of, the best save by a configured metric and mode).
`latest()` walks the saves newest first and skips unreadable ones with a warning, so a corrupted
file never hides the previous good checkpoint.

Every bad file is one CheckpointError naming it and saying what it is: empty, truncated or corrupted, not a
PyTorch file, a pickled (unsafe) checkpoint that pc3d will not unpickle (convert a trusted one with
`python -m pc3d convert-checkpoint SRC DST`), not a pc3d checkpoint, or weights of another model
(`load_model_state` names the missing / unexpected keys).
"""
from __future__ import annotations

import logging
import math
import os
import pickle
import re
import shutil
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pc3d.errors import CheckpointError, ConfigError

FORMAT = "pc3d-checkpoint"
VERSION = 1
_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")
log = logging.getLogger(__name__)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """`torch.save(obj)` to `path` atomically (temp file in the same folder + fsync + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _torch_load(path: Path, map_location: str | torch.device = "cpu"):
    """torch.load(weights_only=True) of `path`; one CheckpointError naming the file and what is wrong with it."""
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, expected a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a checkpoint")
    with path.open("rb") as f:
        head = f.read(4)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, KeyError, ... for bad files
        unsafe = _UNSAFE_GLOBAL.search(str(exc)) if isinstance(exc, pickle.UnpicklingError) else None
        if unsafe:
            raise CheckpointError(
                f"{path}: a pickled checkpoint holding Python objects ({unsafe.group(1)}), which pc3d does not "
                "load: it reads checkpoints with torch.load(weights_only=True) so that loading runs no code; if you "
                f"trust the file, convert it: python -m pc3d convert-checkpoint {path} <converted.pt>") from exc
        if head == b"PK\x03\x04" and not zipfile.is_zipfile(path):
            what = f"truncated or corrupted ({size} bytes; the zip archive's directory is missing)"
        elif head == b"PK\x03\x04":
            what = f"corrupted ({_first_line(exc)})"
        elif head[:1] == b"\x80":
            what = f"not readable as a PyTorch checkpoint (a damaged legacy file or a plain pickle: {_first_line(exc)})"
        else:
            what = "not a PyTorch checkpoint (neither a torch.save zip archive nor a pickle)"
        raise CheckpointError(f"{path}: {what}") from exc


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a pc3d checkpoint with weights_only=True; CheckpointError (naming the file) when it is
    missing, a folder, empty, truncated, corrupted, pickled or not a pc3d checkpoint."""
    path = Path(path)
    ckpt = _torch_load(path, map_location)
    if not isinstance(ckpt, Mapping) or ckpt.get("format") != FORMAT:
        keys = sorted(ckpt)[:8] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise CheckpointError(f"{path}: not a pc3d checkpoint (found {keys}); a bare state_dict loads with "
                              "pc3d.engine.checkpoint.load_weights")
    if ckpt.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {ckpt['version']} is newer than this pc3d "
                              f"({VERSION})")
    if not isinstance(ckpt.get("model"), Mapping):
        raise CheckpointError(f"{path}: pc3d checkpoint without model weights (no 'model' state_dict)")
    if "config" in ckpt and not isinstance(ckpt["config"], Mapping):
        raise CheckpointError(f"{path}: its 'config' is a {type(ckpt['config']).__name__}, not a mapping")
    return dict(ckpt)


def load_model_state(model: torch.nn.Module, state: Mapping, path: str | os.PathLike) -> None:
    """`model.load_state_dict(state)` (strict); a CheckpointError naming `path` and, briefly, the missing,
    unexpected and mis-shaped keys when the weights are another model's, or the tensors holding NaN / inf."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        def brief(keys: list[str]) -> str:
            return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

        parts = [f"{len(missing)} missing ({brief(missing)})" if missing else "",
                 f"{len(unexpected)} unexpected ({brief(unexpected)})" if unexpected else "",
                 f"{len(shapes)} of another shape ({brief(shapes)})" if shapes else ""]
        raise CheckpointError(f"{path}: weights of another model than {type(model).__name__}: keys "
                              + "; ".join(p for p in parts if p))
    broken = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
              and not bool(torch.isfinite(v).all())]
    if broken:  # a diverged run: its predictions would be NaN without a word
        raise CheckpointError(f"{path}: {len(broken)} weight tensor(s) hold NaN / inf ({', '.join(broken[:3])}"
                              f"{' ...' if len(broken) > 3 else ''}); the run diverged before this save")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: weights do not load into {type(model).__name__} ({_first_line(exc)})") from exc


def load_weights(path: str | os.PathLike, *, ema: bool = True) -> dict:
    """Model weights from a pc3d checkpoint (its EMA weights when present and `ema`), or from a
    bare state_dict file; weights_only loading either way."""
    path = Path(path)
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError:
        sd = _torch_load(path)
        if isinstance(sd, Mapping) and sd and all(isinstance(v, torch.Tensor) for v in sd.values()):
            return dict(sd)
        raise
    if ema and ckpt.get("ema"):
        return dict(ckpt["ema"]["model"])
    return dict(ckpt["model"])


def _weights_only_safe(obj: Any, where: str, dropped: list[str]) -> Any:
    """`obj` with only what torch.load(weights_only=True) reads: tensors, numbers, strings, None, lists / dicts of
    them (numpy arrays become tensors, tuples lists); anything else is left out and listed in `dropped`."""
    import numpy as np

    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return obj
    if isinstance(obj, np.ndarray) and obj.dtype.kind in "biuf":
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic) and obj.dtype.kind in "biuf":
        return obj.item()
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                dropped.append(f"{where}[{key!r}]")
                continue
            value = _weights_only_safe(value, f"{where}.{key}" if where else str(key), dropped)
            if value is not _DROPPED:
                out[key] = value
        return out
    if isinstance(obj, (list, tuple)):
        items = [_weights_only_safe(v, f"{where}[{i}]", dropped) for i, v in enumerate(obj)]
        return [v for v in items if v is not _DROPPED]
    dropped.append(f"{where or 'the file'} ({type(obj).__module__}.{type(obj).__qualname__})")
    return _DROPPED


_DROPPED = object()


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> list[str]:
    """Rewrite a TRUSTED pickled checkpoint `src` as one torch.load(weights_only=True) reads (`dst`): unpickles it
    with weights_only=False (this runs whatever code the file holds: only for files you trust), keeps tensors,
    numbers, strings, lists and dicts, and returns what it left out."""
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise CheckpointError(f"{src}: no such checkpoint file")
    if dst.resolve() == src.resolve():
        raise CheckpointError(f"{dst}: write the converted checkpoint to another file than its source")
    try:
        obj = torch.load(src, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - whatever the unpickler raises, the file is unreadable
        raise CheckpointError(f"{src}: not readable even with weights_only=False ({_first_line(exc)})") from exc
    dropped: list[str] = []
    safe = _weights_only_safe(obj, "", dropped)
    if safe is _DROPPED:
        raise CheckpointError(f"{src}: holds a {dropped[0]}, nothing a checkpoint can keep")
    atomic_save(safe, dst)
    return dropped


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file as given, or for a folder (a run dir or its checkpoints/) its newest
    loadable save."""
    path = Path(path)
    if path.is_file():
        return path
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if not folder.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint file or folder")
    found = latest_checkpoint(folder)
    if found is None:
        raise CheckpointError(f"{folder}: no loadable checkpoint in this folder")
    return found


def step_checkpoints(folder: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of the `step_*.pt` saves in `folder`, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), folder / name) for name in os.listdir(folder) if (m := _STEP_FILE.match(name))]
    return sorted(found)


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """Newest save in `folder` that loads; bad files are skipped with a warning."""
    for _, path in reversed(step_checkpoints(folder)):
        try:
            load_checkpoint(path)
        except CheckpointError as exc:
            log.warning("skipping %s", exc)
            continue
        return path
    return None


def _better(value: float, best: float | None, mode: str) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return best is None or (value > best if mode == "max" else value < best)


class CheckpointManager:
    """Saves into `folder`: `step_XXXXXXXX.pt` (the newest `keep_last` kept) and `best.pt`.

    best_metric: name of the metric (in the dict passed to `save`) that decides `best.pt`;
    None keeps no best. mode: 'max' or 'min'.
    """

    def __init__(self, folder: str | os.PathLike, *, keep_last: int = 3, best_metric: str | None = None,
                 mode: str = "max"):
        if mode not in ("max", "min"):
            raise ConfigError(f"train.best_mode must be 'max' or 'min', got {mode!r}")
        if keep_last < 1:
            raise ConfigError(f"train.keep_last must be >= 1, got {keep_last}")
        self.folder = Path(folder)
        self.keep_last, self.best_metric, self.mode = keep_last, best_metric, mode
        self.best_value: float | None = None
        self.best_step: int | None = None

    @property
    def best_path(self) -> Path:
        return self.folder / "best.pt"

    def best_state(self) -> dict:
        return {"metric": self.best_metric, "mode": self.mode, "value": self.best_value, "step": self.best_step}

    def load_best_state(self, state: Mapping | None) -> None:
        if state and state.get("metric") == self.best_metric and state.get("mode") == self.mode:
            self.best_value, self.best_step = state.get("value"), state.get("step")

    def is_better(self, metrics: Mapping[str, float] | None) -> bool:
        if not self.best_metric or not metrics or self.best_metric not in metrics:
            return False
        return _better(float(metrics[self.best_metric]), self.best_value, self.mode)

    def save(self, state: dict, step: int, metrics: Mapping[str, float] | None = None) -> Path:
        """Write `state` as the save of `step`; update best.pt when `metrics` improve the best; rotate."""
        improved = self.is_better(metrics)
        if improved:
            self.best_value, self.best_step = float(metrics[self.best_metric]), step
        state = {"format": FORMAT, "version": VERSION, **state, "best": self.best_state(),
                 "metrics": dict(metrics or {})}
        path = atomic_save(state, self.folder / f"step_{step:08d}.pt")
        if improved:
            self._link_best(path)
        for _, old in step_checkpoints(self.folder)[:-self.keep_last]:
            if old != path:
                old.unlink(missing_ok=True)
        return path

    def _link_best(self, path: Path) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".best.pt.tmp-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        try:
            os.link(path, tmp)
        except OSError:
            shutil.copyfile(path, tmp)
        os.replace(tmp, self.best_path)
        _fsync_dir(self.folder)

    def continue_from(self, saved: Path, step: int) -> None:
        """Make this folder continue the run whose save of `step` is `saved` (a file in this folder or in
        another run's checkpoints/), after load_best_state gave that save's best:

        - saves here of later steps belong to a timeline the resume abandons: they move to
          `abandoned_after_<step>/`, so that rotation, resume=auto and tools/test.py never take them;
        - best.pt becomes that run's best up to `step` (its best.pt or save of the best step, linked), or, when
          neither file is left, the best is forgotten with a warning (the next evaluation starts a new one)."""
        later = [path for s, path in step_checkpoints(self.folder) if s > step]
        best_here = self._step_of(self.best_path)
        if best_here is not None and best_here > step:
            later.append(self.best_path)
        if later:
            aside = self.folder / f"abandoned_after_{step}"
            aside.mkdir(exist_ok=True)
            for path in later:
                os.replace(path, aside / path.name)
            log.warning("resuming at step %d: moved %d later save(s) of this run dir to %s", step, len(later), aside)
        if self.best_step is None:
            return
        source = Path(saved).parent
        candidates = [source / "best.pt", source / f"step_{self.best_step:08d}.pt"]
        found = next((c for c in candidates if self._step_of(c) == self.best_step), None)
        if found is None:
            log.warning("resuming at step %d: the save of its best step %d (%s) is gone; best.pt starts afresh",
                        step, self.best_step, self.best_metric)
            self.best_value = self.best_step = None
            self.best_path.unlink(missing_ok=True)
        elif not (self.best_path.is_file() and os.path.samefile(found, self.best_path)):
            self._link_best(found)

    @staticmethod
    def _step_of(path: Path) -> int | None:
        """The step of the checkpoint at `path`, or None when there is none that loads."""
        if not path.is_file():
            return None
        try:
            return int(load_checkpoint(path)["progress"]["step"])
        except (CheckpointError, KeyError, TypeError, ValueError):
            return None

    def latest(self) -> Path | None:
        return latest_checkpoint(self.folder)
