"""Object-level augmentation for detection: ground-truth sampling and per-object noise (SECOND).

Both keep the scene physically plausible: a box is only placed or moved where its bird's-eye-view
footprint overlaps no other box (exact rotated BEV IoU == 0), and the points inside a moved or
pasted box move with it, so every box still holds its own points.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from os import PathLike

import numpy as np

from pc3d.errors import ConfigError
from pc3d.geometry import iou_bev, points_in_boxes, rotate_points_z, wrap_angle

from ..batch import POINT_KEYS, select_points
from ..gt_database import GTDatabase


def _per_class(value: int | Mapping[str, int], classes: Sequence[str], default: int = 0) -> dict[str, int]:
    if isinstance(value, Mapping):
        return {c: int(value.get(c, default)) for c in classes}
    return {c: int(value) for c in classes}


class GTSampling:
    """Paste objects from the GT database into the scene (SECOND's ground-truth augmentation).

    database: the header JSON written by tools/create_data.py. class_names: the dataset's classes
    (label id = index + 1). sample_groups: {class: quota}; a scene with fewer than `quota` boxes of
    the class receives up to the difference. min_points: {class: n} or one n, objects with fewer
    points are never sampled. exclude_difficulty: database difficulties never sampled (-1: unknown).
    Candidates overlapping an existing box (gt_boxes, or other_boxes: the objects of other classes) or an earlier
    candidate (BEV IoU > 0) are rejected, and the scene's points inside accepted boxes are removed before the
    object's points are added.
    fill_time: the frames carry a time column last that the database lacks (a multi-sweep dataset, e.g.
    WaymoDataset with n_past_scans, and the single-sweep database tools/create_data.py writes): pasted points
    get time 0, objects seen in the current sweep only (OpenPCDet's multi-frame databases keep each object's
    points of every sweep instead).
    Pasted boxes keep the database's velocities (vx, vy); a frame with velocities and a database without them
    (written before it kept them) gives its pasted boxes NaN velocities: unknown, which a velocity head skips.
    """

    def __init__(self, database: str | PathLike, class_names: Sequence[str], sample_groups: Mapping[str, int],
                 min_points: int | Mapping[str, int] = 5, exclude_difficulty: Sequence[int] = (-1,),
                 fill_time: bool = False):
        self.database_path = database
        self.class_names = list(class_names)
        unknown = set(sample_groups) - set(self.class_names)
        if unknown:
            raise ConfigError(f"GTSampling: sample_groups names classes not in class_names: {sorted(unknown)}")
        self.sample_groups = {c: int(q) for c, q in sample_groups.items()}
        self.min_points = _per_class(min_points, self.class_names)
        self.exclude_difficulty = list(exclude_difficulty)
        self.fill_time = bool(fill_time)
        self._db: GTDatabase | None = None
        self._pools: dict[str, np.ndarray] = {}

    @property
    def db(self) -> GTDatabase:
        """The database, loaded on first use (in each DataLoader worker)."""
        if self._db is None:
            self._db = GTDatabase.load(self.database_path)
            db = self._db
            usable = ~np.isin(db.difficulty, self.exclude_difficulty)
            self._pools = {c: np.flatnonzero(usable & (db.name == c) & (db.num_points >= self.min_points[c]))
                           for c in self.sample_groups}
        return self._db

    def __getstate__(self) -> dict:  # workers reopen the memory map
        return {**self.__dict__, "_db": None, "_pools": {}}

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        db = self.db
        extra = [k for k in (*POINT_KEYS, "num_current_points") if k in sample and k != "points"]
        if extra:
            raise ConfigError(f"GTSampling cannot invent {extra} for pasted points; use it for detection only")
        time = int(self.fill_time and "time" not in db.columns)
        if db.points.shape[1] + time != sample["points"].shape[1]:
            raise ConfigError(f"GTSampling: database points have {db.points.shape[1]} columns ({db.columns}), "
                              f"the frame {sample.get('frame_id')} has {sample['points'].shape[1]}"
                              + ("" if time else " (a multi-sweep frame's time column: fill_time=true)"))
        boxes, labels = sample["gt_boxes"], sample["gt_labels"]
        placed = np.concatenate([boxes[:, :7], sample.get("other_boxes", boxes[:0])[:, :7]]).astype(np.float32)
        chosen: list[np.ndarray] = []
        for cls, quota in self.sample_groups.items():
            pool = self._pools[cls]
            want = quota - int((labels == self.class_names.index(cls) + 1).sum())
            if want <= 0 or not len(pool):
                continue
            picks = pool[rng.choice(len(pool), min(want, len(pool)), replace=False)]
            accepted = self._non_overlapping(db.box[picks, :7], placed)
            chosen.append(picks[accepted])
            placed = np.concatenate([placed, db.box[picks[accepted], :7]])
        picks = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
        if not len(picks):
            return sample
        new_boxes = db.box[picks]
        inside = points_in_boxes(sample["points"], new_boxes) >= 0
        select_points(sample, ~inside)
        pasted = [db.object_points(k) for k in picks]
        if time:  # a time column of 0 after the database's columns
            pasted = [np.pad(pts, ((0, 0), (0, 1))) for pts in pasted]
        for pts, box in zip(pasted, new_boxes, strict=True):
            pts[:, :3] += box[:3]
        sample["points"] = np.concatenate([sample["points"], *pasted]).astype(np.float32, copy=False)
        padded = np.zeros((len(picks), boxes.shape[1]), np.float32)
        padded[:, 7:] = np.nan  # a velocity the database does not know (a database written without one)
        width = min(boxes.shape[1], new_boxes.shape[1])
        padded[:, :width] = new_boxes[:, :width]
        sample["gt_boxes"] = np.concatenate([boxes, padded])
        ids = np.asarray([self.class_names.index(n) + 1 for n in db.name[picks]], np.int64)
        sample["gt_labels"] = np.concatenate([labels, ids])
        return sample

    @staticmethod
    def _non_overlapping(candidates: np.ndarray, placed: np.ndarray) -> np.ndarray:
        """bool [K]: candidates clear of every placed box and of every earlier accepted candidate."""
        ok = np.ones(len(candidates), bool)
        if len(placed):
            ok &= np.asarray(iou_bev(candidates, placed)).max(1) <= 0
        mutual = np.asarray(iou_bev(candidates, candidates)) > 0
        np.fill_diagonal(mutual, False)
        for i in range(len(candidates)):
            if ok[i]:
                ok[i + 1:] &= ~mutual[i, i + 1:]
        return ok


class ObjectNoise:
    """Move each box (and its points) by a random translation (Gaussian, per-axis `translation_std`)
    and a turn about its centre (uniform in `rotation`), trying up to `num_try` draws and keeping the
    first that overlaps no other box (of gt_boxes or other_boxes); a box with no collision-free draw stays where
    it is."""

    def __init__(self, translation_std: Sequence[float] = (0.25, 0.25, 0.25),
                 rotation: Sequence[float] = (-0.15707963, 0.15707963), num_try: int = 100):
        self.std = np.broadcast_to(np.asarray(translation_std, np.float64), (3,)).copy()
        self.rotation = tuple(float(r) for r in rotation)
        if len(self.rotation) != 2 or self.rotation[0] > self.rotation[1] or (self.std < 0).any() or num_try < 1:
            raise ConfigError(f"ObjectNoise: bad translation_std {translation_std!r} / rotation {rotation!r} / "
                              f"num_try {num_try!r}")
        self.num_try = int(num_try)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        boxes = sample["gt_boxes"].copy()
        if not len(boxes):
            return sample
        points = sample["points"].copy()
        owner = points_in_boxes(points, boxes[:, :7])
        obstacles = sample.get("other_boxes", boxes[:0])[:, :7]
        for i in rng.permutation(len(boxes)):
            shift = rng.normal(0.0, 1.0, (self.num_try, 3)) * self.std
            turn = rng.uniform(*self.rotation, self.num_try)
            trials = np.repeat(boxes[i:i + 1, :7], self.num_try, 0).astype(np.float64)
            trials[:, :3] += shift
            trials[:, 6] += turn
            others = np.concatenate([np.delete(boxes[:, :7], i, 0), obstacles])
            clear = np.ones(self.num_try, bool) if not len(others) else np.asarray(iou_bev(trials, others)).max(1) <= 0
            if not clear.any():
                continue
            t = int(np.argmax(clear))
            rows = owner == i
            centre = boxes[i, :3].copy()
            local = points[rows, :3] - centre
            points[rows, :3] = rotate_points_z(local, turn[t]) + centre + shift[t].astype(np.float32)
            boxes[i, :3] += shift[t].astype(np.float32)
            boxes[i, 6] = wrap_angle(np.float32(boxes[i, 6] + turn[t]))
            if boxes.shape[1] >= 9:
                boxes[i, 7:9] = rotate_points_z(np.array([[*boxes[i, 7:9], 0.0]], np.float32), turn[t])[0, :2]
        sample["points"], sample["gt_boxes"] = points, boxes
        return sample
