"""A demo / test dataset: synthetic point clouds of four primitive shapes, labelled by shape.

Not a benchmark. It exists so the training engine can be exercised end to end in seconds on a CPU
(`experiment=toy`): sample `i` of a split is generated from `(seed, split, i)` alone, so any
process, worker or run sees the same clouds, and training augmentation (a random rotation about z
and jitter) draws from the global `np.random` generator, which pc3d.engine.data seeds per sample.

Sample: {"points": float32 [num_points, 3], "label": int64 class id, "index": int}.
Batch (`collate_fn`): {"points": float32 tensor [B, num_points, 3], "label": int64 tensor [B],
"index": int64 tensor [B]}.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pc3d.errors import ConfigError
from pc3d.eval.classification import mean_class_accuracy, overall_accuracy

CLASSES = ("sphere", "box", "cylinder", "cone")
_SPLITS = {"train": 0, "val": 1, "test": 2}


def _shape(kind: int, n: int, rng: np.random.Generator) -> np.ndarray:
    u, v = rng.random(n), rng.random(n)
    if kind == 0:  # sphere surface
        z = 2 * u - 1
        r, a = np.sqrt(1 - z * z), 2 * np.pi * v
        return np.stack([r * np.cos(a), r * np.sin(a), z], 1)
    if kind == 1:  # box surface: a random face, a random point on it
        p = rng.uniform(-1, 1, (n, 3))
        axis = rng.integers(0, 3, n)
        p[np.arange(n), axis] = np.sign(p[np.arange(n), axis])
        return p
    a = 2 * np.pi * v
    z = 2 * u - 1
    r = np.ones(n) if kind == 2 else (1 - z) / 2  # cylinder, cone (apex up)
    return np.stack([r * np.cos(a), r * np.sin(a), z], 1)


class ToyShapes(torch.utils.data.Dataset):
    """Synthetic shape classification (a demo / test recipe, not a benchmark).

    split: train | val | test; train_size / val_size: samples in train / (val, test);
    num_points: points per cloud; noise: Gaussian jitter (m); augment: random z rotation and
    jitter on the train split.
    """

    def __init__(self, split: str = "train", *, train_size: int = 2048, val_size: int = 512, num_points: int = 128,
                 num_classes: int = 4, noise: float = 0.05, augment: bool = True, seed: int = 0):
        if split not in _SPLITS:
            raise ConfigError(f"ToyShapes split must be one of {sorted(_SPLITS)}, got {split!r}")
        if not 2 <= num_classes <= len(CLASSES):
            raise ConfigError(f"ToyShapes num_classes must be in [2, {len(CLASSES)}], got {num_classes}")
        self.split, self.num_points, self.num_classes = split, num_points, num_classes
        self.size = train_size if split == "train" else val_size
        self.noise, self.augment, self.seed = noise, augment and split == "train", seed
        self.labels = np.random.default_rng([seed, _SPLITS[split], 1 << 20]).integers(0, num_classes, self.size)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, _SPLITS[self.split], index])
        label = int(self.labels[index])
        pts = _shape(label, self.num_points, rng) * rng.uniform(0.5, 1.5, 3)
        pts += rng.normal(0, self.noise, pts.shape)
        if self.augment:
            a = np.random.uniform(-np.pi, np.pi)  # noqa: NPY002 - the engine seeds the global generator per sample
            c, s = np.cos(a), np.sin(a)
            pts = pts @ np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]])
            pts += np.random.normal(0, 0.01, pts.shape)  # noqa: NPY002
        return {"points": pts.astype(np.float32), "label": label, "index": index}

    @staticmethod
    def collate_fn(samples: list[dict]) -> dict:
        return {"points": torch.from_numpy(np.stack([s["points"] for s in samples])),
                "label": torch.tensor([s["label"] for s in samples], dtype=torch.int64),
                "index": torch.tensor([s["index"] for s in samples], dtype=torch.int64)}

    def evaluate(self, predictions: list[dict]) -> dict:
        """Overall accuracy and mean class accuracy (%) of [{"label": int, ...}] in index order."""
        if len(predictions) != self.size:
            raise ConfigError(f"ToyShapes.evaluate: {len(predictions)} predictions for {self.size} samples")
        pred = np.array([int(p["label"]) for p in predictions])
        return {"accuracy": 100.0 * overall_accuracy(pred, self.labels),
                "mean_class_accuracy": 100.0 * mean_class_accuracy(pred, self.labels, self.num_classes)}

    def write_predictions(self, predictions: list[dict], out_dir: str | Path) -> Path:
        """One line per sample: `index class_name score` in `<out_dir>/predictions.txt`."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "predictions.txt"
        path.write_text("".join(f"{i} {CLASSES[int(p['label'])]} {float(max(p['scores'])):.4f}\n"
                                for i, p in enumerate(predictions)))
        return path
