"""The ground-truth object database for GT sampling: every training object's points, in its box frame (all the
points inside its box, also those inside a neighbour's overlapping box, as OpenPCDet's database).

Written by ``tools/create_data.py`` beside the dataset, three files per (dataset, split):

    <name>_gt_database_<split>.json   header: {"format": "pc3d-gt-database", "version": 1, "dataset",
                                      "split", "columns" (point columns), "count" (objects per class),
                                      "empty" (objects left out for having no point, per class),
                                      "index": npz file name, "points": bin file name}
    <name>_gt_database_<split>.npz    index arrays: name <U [K], frame_id <U [K], box float32 [K, 7 (+2)]
                                      (LiDAR frame, where the object was; vx, vy when the frames' boxes
                                      carry velocities), num_points int32 [K],
                                      difficulty int8 [K] (KITTI: 0 easy, 1 moderate, 2 hard, -1 other;
                                      Waymo: its levels, 0 unknown, 1 LEVEL_1, 2 LEVEL_2),
                                      offset int64 [K + 1] (rows of each object in the bin file)
    <name>_gt_database_<split>.bin    float32 [P, 3 + C] raw points, x, y, z relative to the box centre

No pickle anywhere: the npz holds plain arrays (loaded with allow_pickle=False) and the point file
is memory-mapped, so a worker reads only the objects it samples.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from pc3d.data.io import NUMPY_FILE_ERRORS
from pc3d.errors import DataFormatError
from pc3d.geometry import points_in_boxes

FORMAT, VERSION = "pc3d-gt-database", 1


def database_paths(root: str | PathLike, dataset: str, split: str) -> tuple[Path, Path, Path]:
    base = Path(root) / f"{dataset}_gt_database_{split}"
    return base.with_suffix(".json"), base.with_suffix(".npz"), base.with_suffix(".bin")


def write_database(root: str | PathLike, dataset: str, split: str, columns: Iterable[str],
                   frames: Iterable[dict]) -> Path:
    """Write the database from frames {"frame_id", "points" [N, 3 + C], "gt_boxes" [M, 7 (+2)], "names" [M],
    "difficulty" [M]}; returns the header path. Objects with no point are left out, counted in "empty".
    Boxes keep their velocities (vx, vy) when every frame's boxes have them."""
    header_path, index_path, bin_path = database_paths(root, dataset, split)
    names, frame_ids, boxes, counts, difficulty = [], [], [], [], []
    empty: Counter = Counter()
    width = 9
    with open(bin_path, "wb") as out:
        for frame in frames:
            box = np.asarray(frame["gt_boxes"], np.float32)
            width = min(width, box.shape[1] if box.ndim == 2 else 7)
            if not len(box):
                continue
            # every point inside each box, also one another box holds (OpenPCDet's rule): each box is tested on the
            # points inside any box only (points_in_boxes gives a point its first box)
            inside = np.flatnonzero(points_in_boxes(frame["points"], box[:, :7]) >= 0)
            for k in range(len(box)):
                rows = inside[points_in_boxes(frame["points"][inside], box[k:k + 1, :7]) == 0]
                if not len(rows):
                    empty[str(frame["names"][k])] += 1
                    continue
                pts = frame["points"][rows].astype(np.float32)
                pts[:, :3] -= box[k, :3]
                out.write(np.ascontiguousarray(pts, "<f4").tobytes())
                names.append(str(frame["names"][k]))
                frame_ids.append(str(frame["frame_id"]))
                boxes.append(box[k, :9])
                counts.append(len(rows))
                difficulty.append(int(frame["difficulty"][k]))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    np.savez(index_path, name=np.asarray(names, dtype=str), frame_id=np.asarray(frame_ids, dtype=str),
             box=np.array([b[:width] for b in boxes], np.float32).reshape(-1, width),
             num_points=np.asarray(counts, np.int32),
             difficulty=np.asarray(difficulty, np.int8), offset=offsets)
    columns = list(columns)
    header = {"format": FORMAT, "version": VERSION, "dataset": dataset, "split": split, "columns": columns,
              "count": dict(sorted(Counter(names).items())), "empty": dict(sorted(empty.items())),
              "index": index_path.name, "points": bin_path.name}
    header_path.write_text(json.dumps(header, indent=1) + "\n")
    return header_path


@dataclass
class GTDatabase:
    """A loaded database: index arrays in memory, points memory-mapped (float32 [P, 3 + C])."""

    path: Path
    columns: list[str]
    name: np.ndarray
    frame_id: np.ndarray
    box: np.ndarray
    num_points: np.ndarray
    difficulty: np.ndarray
    offset: np.ndarray
    points: np.ndarray

    @classmethod
    def load(cls, header_path: str | PathLike) -> GTDatabase:
        path = Path(header_path)
        try:
            header = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise DataFormatError(path, f"unreadable GT database header ({error}); run tools/create_data.py") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT or header.get("version") != VERSION:
            found = f"{header.get('format')!r} version {header.get('version')!r}" if isinstance(header, dict) else "?"
            raise DataFormatError(path, f"expected format {FORMAT!r} version {VERSION}, got {found}")
        names_ok = all(isinstance(header.get(k), str) for k in ("index", "points"))
        if not names_ok or not isinstance(header.get("columns"), list) or len(header["columns"]) < 3:
            raise DataFormatError(path, "expected 'index' and 'points' file names and at least 3 'columns'; "
                                        "rerun tools/create_data.py")
        index_path = path.parent / header["index"]
        try:
            with np.load(index_path, allow_pickle=False) as index:
                arrays = {k: index[k] for k in ("name", "frame_id", "box", "num_points", "difficulty", "offset")}
        except NUMPY_FILE_ERRORS as error:
            raise DataFormatError(index_path, f"bad GT database index ({error})") from None
        k = len(arrays["name"])
        lengths = {a: len(arrays[a]) for a in ("frame_id", "box", "num_points", "difficulty", "offset")}
        if lengths != {"frame_id": k, "box": k, "num_points": k, "difficulty": k, "offset": k + 1} or (
                np.diff(arrays["offset"]) < 0).any():
            raise DataFormatError(index_path, f"index arrays disagree ({k} names, lengths {lengths}); rerun "
                                              "tools/create_data.py")
        if arrays["box"].ndim != 2 or arrays["box"].shape[1] not in (7, 9):
            raise DataFormatError(index_path, f"box must be [K, 7] or [K, 9], got {list(arrays['box'].shape)}")
        columns = list(header["columns"])
        bin_path = path.parent / header["points"]
        size = bin_path.stat().st_size if bin_path.is_file() else -1
        width = 4 * len(columns)
        if size < 0 or size % width or size // width != int(arrays["offset"][-1]):
            raise DataFormatError(bin_path, f"expected {int(arrays['offset'][-1])} points of {len(columns)} float32, "
                                            f"got {size} bytes")
        points = (np.memmap(bin_path, dtype="<f4", mode="r").reshape(-1, len(columns)) if size
                  else np.zeros((0, len(columns)), np.float32))
        return cls(path, columns, points=points, **arrays)

    def __len__(self) -> int:
        return len(self.name)

    def object_points(self, k: int) -> np.ndarray:
        """float32 [n_k, 3 + C] points of object k, x, y, z relative to its box centre (a copy)."""
        return np.array(self.points[self.offset[k]:self.offset[k + 1]], np.float32)
