"""What a run reports: a log file, console progress, TensorBoard scalars and a metrics JSON.

Only rank 0 reports. `setup_logging` sends the `pc3d` loggers to `<run_dir>/train.log` and to the
console (through tqdm.write, so messages do not break the progress bar). The progress bar shows
loss, lr, it/s and the ETA; it is drawn only on a terminal (log lines every `log_interval` steps
report the same figures in files). TensorBoard is imported lazily, when the first scalar is
written.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path

_HANDLER_TAG = "_pc3d_engine_handler"


class _TqdmHandler(logging.StreamHandler):
    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def setup_logging(run_dir: str | os.PathLike | None, *, is_main: bool = True, filename: str = "train.log",
                  console: bool = True) -> logging.Logger:
    """Configure the `pc3d` logger: INFO to a file in `run_dir` and to the console, on rank 0 only
    (other ranks log warnings to the console). Safe to call again (replaces its own handlers)."""
    logger = logging.getLogger("pc3d")
    for h in [h for h in logger.handlers if getattr(h, _HANDLER_TAG, False)]:
        logger.removeHandler(h)
        h.close()
    logger.setLevel(logging.INFO)
    logger.propagate = False
    fmt = logging.Formatter("[%(asctime)s %(levelname)s %(name)s] %(message)s", "%Y-%m-%d %H:%M:%S")
    handlers: list[logging.Handler] = []
    if console:
        h = _TqdmHandler()
        h.setLevel(logging.INFO if is_main else logging.WARNING)
        handlers.append(h)
    if is_main and run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(Path(run_dir) / filename))
    for h in handlers:
        h.setFormatter(fmt)
        setattr(h, _HANDLER_TAG, True)
        logger.addHandler(h)
    return logger


def close_logging() -> None:
    logger = logging.getLogger("pc3d")
    for h in [h for h in logger.handlers if getattr(h, _HANDLER_TAG, False)]:
        logger.removeHandler(h)
        h.close()


def flatten_metrics(metrics: Mapping, prefix: str = "") -> dict[str, float]:
    """Nested metric dicts -> {"a/b": float}; non-numeric leaves are dropped."""
    flat: dict[str, float] = {}
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            flat.update(flatten_metrics(v, key + "/"))
        elif isinstance(v, bool | int | float) or hasattr(v, "item"):
            try:
                flat[key] = float(v)
            except (TypeError, ValueError):
                continue
    return flat


class Progress:
    """tqdm bar over optimizer steps on rank 0 and a terminal; no-op elsewhere."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, dynamic_ncols=True, unit="it", smoothing=0.05)

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def show(self, **values) -> None:
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in values.items()},
                                 refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class ScalarWriter:
    """TensorBoard scalars in `<run_dir>/tb` (rank 0; lazily imported; disabled -> no-op)."""

    def __init__(self, folder: str | os.PathLike, enabled: bool):
        self.folder, self.enabled, self._writer = Path(folder), enabled, None

    def add(self, scalars: Mapping[str, float], step: int) -> None:
        if not self.enabled:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.folder))
        for k, v in scalars.items():
            if math.isfinite(v):
                self._writer.add_scalar(k, v, step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def write_json(path: str | os.PathLike, data) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
    os.replace(tmp, path)


def _jsonable(value):
    """numpy / torch scalars and arrays -> python numbers and lists; anything else -> str."""
    if hasattr(value, "tolist"):
        return value.tolist()
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def metrics_table(metrics: Mapping, title: str | None = None) -> str:
    """Markdown table `| metric | value |` of the flattened metrics."""
    lines = [f"### {title}", ""] if title else []
    lines += ["| metric | value |", "|---|---|"]
    for k, v in flatten_metrics(metrics).items():
        lines.append(f"| {k} | {v:.4f} |" if abs(v) < 1e6 else f"| {k} | {v:.6g} |")
    return "\n".join(lines)
