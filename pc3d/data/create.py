"""Derived files of ``tools/create_data.py``: info indexes and the GT database, JSON / npz, never pickle.

Every info file is ``{"format": "pc3d-infos", "version": 1, "dataset", "split", "frames": [...],
"skipped": {frame: problem}}`` (Waymo: ``{"format": "pc3d-waymo-index", "version": 2, "segments"}``
plus the same frame list). Bad frames are skipped, counted and reported, never dropped silently; a root
holding none of the dataset's expected files is a DataFormatError naming it and what was expected.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pc3d.errors import ConfigError, DataFormatError
from pc3d.geometry import points_in_boxes_count
from pc3d.utils.progress import track

from .gt_database import write_database
from .io import read_ids

INFO_FORMAT, INFO_VERSION = "pc3d-infos", 1


def _plain(value):
    """JSON-ready copy of numpy arrays / scalars inside dicts and lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _write(path: Path, payload: dict) -> Path:
    path.write_text(json.dumps(_plain(payload)) + "\n")
    return path


def _frames(dataset, desc: str, skipped: dict) -> Iterator[tuple[int, dict]]:
    """(index, raw sample) of every good frame, with a progress bar; bad frames go to `skipped`."""
    for i in track(range(len(dataset)), desc=desc, unit="frame"):
        try:
            yield i, dataset.load(i)
        except DataFormatError as error:
            skipped[dataset.frame_id(i)] = str(error)


def _expect(found, root: Path, expected: str) -> None:
    """DataFormatError naming `root` when `found` is empty: the layout holds none of what create_data reads."""
    if not found:
        raise DataFormatError(root, f"nothing to index: expected {expected}")


def create_kitti(root: Path, database_split: str = "train") -> dict:
    from .kitti import KittiDataset

    written, report = [], {}
    splits = [s for s in ("train", "val", "trainval", "test") if (root / "ImageSets" / f"{s}.txt").is_file()]
    _expect(splits, root, "ImageSets/{train,val,trainval,test}.txt beside training/ and testing/ (KITTI object)")
    for split in splits:
        if not read_ids(root / "ImageSets" / f"{split}.txt", allow_empty=True):
            report[split] = {"frames": 0, "skipped": {}}  # an empty list (the simulator's test split)
            continue
        dataset = KittiDataset(root, split, fov_only=False)
        frames, skipped, db_frames = [], {}, []
        for _, sample in _frames(dataset, f"kitti {split}", skipped):
            info = {"frame_id": sample["frame_id"], "num_points": len(sample["points"]),
                    "image_shape": sample["metadata"]["image_shape"]}
            annos = sample["metadata"].get("annos")
            if annos is not None:
                real = annos["name"] != "DontCare"
                counts = np.full(len(real), -1, np.int64)
                if real.any():
                    counts[real] = points_in_boxes_count(sample["points"], annos["gt_boxes_lidar"][real])
                info["annos"] = {**annos, "num_points_in_gt": counts}
                if split == database_split and real.any():
                    db_frames.append({"frame_id": sample["frame_id"], "points": sample["points"],
                                      "gt_boxes": annos["gt_boxes_lidar"][real], "names": annos["name"][real],
                                      "difficulty": annos["difficulty"][real]})
            frames.append(info)
        written.append(_write(root / f"kitti_infos_{split}.json", {
            "format": INFO_FORMAT, "version": INFO_VERSION, "dataset": "kitti", "split": split, "frames": frames,
            "skipped": skipped, "notes": dataset.notes}))
        report[split] = {"frames": len(frames), "skipped": skipped, "notes": dataset.notes}
        if split == database_split:
            header = write_database(root, "kitti", split, ("x", "y", "z", "intensity"), db_frames)
            written.append(header)
            report["gt_database"] = json.loads(header.read_text())["count"]
    report["written"] = [str(p) for p in written]
    return report


def create_waymo(root: Path, database_split: str = "training", sweeps: int = 1) -> dict:
    """The split indexes, each labelled split's ground truth as Waymo's files (``waymo_gt_objects_<split>.bin``, an
    Objects file of the boxes, and ``waymo_gt_segmentation_<split>.bin``, a SegmentationFrameList of the TOP laser's
    point labels as pc3d's loader reads them: for tools/eval_waymo.py and the official evaluators) and the GT
    database of `database_split`; with sweeps > 1
    the database of multi-sweep frames instead (``waymo_<sweeps>sweeps_gt_database_<split>``: each object's points
    of the merged sweeps inside its current box, time column last, as OpenPCDet's multi-frame databases; a moving
    object's older points outside that box are not kept), for recipes with dataset.n_past_scans = sweeps - 1."""
    from pc3d.eval.waymo_objects import write_objects
    from pc3d.eval.waymo_segmentation import write_segmentation_frames

    from .waymo import WaymoDataset
    from .waymo_parquet import INDEX_FORMAT, INDEX_VERSION, segment_index
    from .waymo_seg import WaymoSegmentationDataset

    written, report = [], {}
    splits = [s for s in ("training", "validation", "testing") if (root / s / "lidar").is_dir()]
    _expect(splits, root, "{training,validation,testing}/lidar/<segment>.parquet (Waymo v2)")
    for split in splits:
        segments = segment_index(root, split)
        index_path = _write(root / f"waymo_infos_{split}.json", {
            "format": INDEX_FORMAT, "version": INDEX_VERSION, "dataset": "waymo", "split": split,
            "segments": segments})
        written.append(index_path)
        report[split] = {"segments": len(segments), "frames": sum(len(s["timestamps"]) for s in segments)}
        if (root / split / "lidar_box").is_dir():  # the ground truth as Waymo's Objects file (its gt.bin)
            written.append(write_objects(root / f"waymo_gt_objects_{split}.bin",
                                         WaymoDataset(root, split, index=index_path).ground_truth_objects()))
        if (root / split / "lidar_segmentation").is_dir():  # and as a SegmentationFrameList
            written.append(write_segmentation_frames(
                root / f"waymo_gt_segmentation_{split}.bin",
                WaymoSegmentationDataset(root, split, index=index_path).range_image_frames()))
        if split == database_split:
            dataset = WaymoDataset(root, split, class_names=("Vehicle", "Pedestrian", "Cyclist", "Sign"),
                                   index=index_path, n_past_scans=sweeps - 1)
            skipped: dict = {}
            db_frames = ({"frame_id": s["frame_id"], "points": s["points"], "gt_boxes": s["metadata"]["annos"]["box"],
                          "names": s["metadata"]["annos"]["name"],
                          "difficulty": s["metadata"]["annos"]["difficulty"]}
                         for _, s in _frames(dataset, f"waymo {split} gt database", skipped))
            header = write_database(root, "waymo" if sweeps == 1 else f"waymo_{sweeps}sweeps", split,
                                    ("x", "y", "z", *dataset.feature_names), db_frames)
            written.append(header)
            report["gt_database"] = json.loads(header.read_text())["count"]
            report[split]["skipped"] = skipped
    report["written"] = [str(p) for p in written]
    return report


def create_semantickitti(root: Path) -> dict:
    from .semantickitti import SemanticKittiDataset

    folder = root / "sequences"
    sequences = sorted(p.name for p in folder.iterdir() if p.name.isdigit() and any((p / "velodyne").glob(
        "*.bin"))) if folder.is_dir() else []
    _expect(sequences, root, "sequences/NN/velodyne/NNNNNN.bin (SemanticKITTI)")
    skipped: dict = {}
    per_sequence: dict[str, dict] = {}
    for seq in sequences:  # one dataset per sequence: test sequences have no labels
        dataset = SemanticKittiDataset(root, sequences=[seq])
        entry = per_sequence[seq] = {"frames": 0, "label_histogram": np.zeros(len(dataset.class_names), np.int64)}
        for _, sample in _frames(dataset, f"semantickitti {seq}", skipped):
            entry["frames"] += 1
            if "point_labels" in sample:
                entry["label_histogram"] += np.bincount(sample["point_labels"], minlength=len(dataset.class_names))
    path = _write(root / "semantickitti_infos.json", {
        "format": INFO_FORMAT, "version": INFO_VERSION, "dataset": "semantickitti", "split": "all",
        "class_names": dataset.class_names, "sequences": per_sequence, "skipped": skipped})
    return {"sequences": {s: v["frames"] for s, v in per_sequence.items()}, "skipped": skipped, "written": [str(path)]}


def create_scannet(root: Path) -> dict:
    from .scannet import ScanNetDataset

    written, report = [], {}
    splits = [s for s in ("train", "val", "test") if (root / f"scannetv2_{s}.txt").is_file()]
    _expect(splits, root, "scannetv2_{train,val,test}.txt beside scans/<scene>/ (ScanNet v2)")
    for split in splits:
        if not read_ids(root / f"scannetv2_{split}.txt", allow_empty=True):
            report[split] = {"frames": 0, "skipped": {}}
            continue
        scenes = read_ids(root / f"scannetv2_{split}.txt")
        boxes = split != "test" and all((root / "scans" / s / f"{s}.aggregation.json").is_file() for s in scenes)
        dataset = ScanNetDataset(root, split, boxes=boxes)  # the detection benchmark's boxes where instances exist
        frames, skipped = [], {}
        for _, sample in _frames(dataset, f"scannet {split}", skipped):
            info = {"frame_id": sample["frame_id"], "num_points": len(sample["points"])}
            if "point_labels" in sample:
                info["label_histogram"] = np.bincount(sample["point_labels"] + 1, minlength=21)[1:]
            if "gt_boxes" in sample:
                info["gt_boxes"], info["gt_labels"] = sample["gt_boxes"], sample["gt_labels"]
            frames.append(info)
        written.append(_write(root / f"scannet_infos_{split}.json", {
            "format": INFO_FORMAT, "version": INFO_VERSION, "dataset": "scannet", "split": split, "frames": frames,
            "skipped": skipped}))
        report[split] = {"frames": len(frames), "skipped": skipped}
    report["written"] = [str(p) for p in written]
    return report


def create_sceneflow(root: Path) -> dict:
    from .sceneflow import VARIANTS, SceneFlowDataset

    written, report = [], {}
    found = [(variant, split) for variant, splits in (("kitti", ("all",)), ("flyingthings3d", ("train", "val")))
             for split in splits if (root / VARIANTS[variant] / ("" if split == "all" else split)).is_dir()]
    _expect(found, root, f"{VARIANTS['kitti']}/ or {VARIANTS['flyingthings3d']}/{{train,val}}/ (HPLFlowNet's "
                         "preprocessed scene flow)")
    for variant, split in found:
        dataset = SceneFlowDataset(root, variant, split, num_points=None)
        frames, skipped = [], {}
        for _, sample in _frames(dataset, f"{variant} {split}", skipped):
            frames.append({"frame_id": sample["frame_id"], "num_points": len(sample["points"])})
        written.append(_write(root / f"sceneflow_{variant}_infos_{split}.json", {
            "format": INFO_FORMAT, "version": INFO_VERSION, "dataset": f"sceneflow_{variant}", "split": split,
            "frames": frames, "skipped": skipped}))
        report[f"{variant}/{split}"] = {"frames": len(frames), "skipped": skipped}
    report["written"] = [str(p) for p in written]
    return report


CREATORS = {"kitti": create_kitti, "waymo": create_waymo, "semantickitti": create_semantickitti,
            "scannet": create_scannet, "sceneflow": create_sceneflow}


def create_data(dataset: str, root: str | Path, sweeps: int = 1) -> dict:
    """Write the info indexes (and, for kitti / waymo, the GT database) of the dataset under root; sweeps:
    Waymo's database of frames of that many sweeps (see create_waymo)."""
    if dataset not in CREATORS:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of {sorted(CREATORS)}")
    if isinstance(sweeps, bool) or not isinstance(sweeps, int) or sweeps < 1 or (sweeps > 1 and dataset != "waymo"):
        raise ConfigError(f"sweeps must be an int >= 1, and > 1 only for waymo; got {sweeps!r} for {dataset}")
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(root, "dataset root is not a folder" if root.exists() else "dataset root does not exist")
    return CREATORS[dataset](root, sweeps=sweeps) if sweeps > 1 else CREATORS[dataset](root)
