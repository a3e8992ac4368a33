"""SemanticKITTI (semantic segmentation and LiDAR moving-object segmentation), read as the devkit does:

    sequences/SS/velodyne/NNNNNN.bin   float32 x, y, z, remission   -> points [N, 4] (intensity)
    sequences/SS/labels/NNNNNN.label   uint32: semantic id (lower 16 bits) | instance id << 16
    sequences/SS/calib.txt, poses.txt, times.txt                     (multi-scan aggregation)

Raw semantic ids become train ids through the devkit's learning map (pc3d/data/learning_maps/
semantic-kitti.yaml for mode="semantic": 0 unlabelled .. 19; semantic-kitti-mos.yaml for mode="mos":
0 unlabelled, 1 static, 2 moving), so ``ignore_index`` is 0 as in the devkit. With n_past_scans > 0
the current scan and up to n_past_scans earlier scans of the sequence are merged in the current
LiDAR frame through the poses (LiDAR pose = Tr^-1 P Tr), with a time column (seconds, 0 for the
current scan, negative for past scans); the current scan's points come first (``num_current_points`` of
them, with ``point_time`` and ``point_frame`` per point: the batch contract's multi-scan keys). In mode
"mos" samples also carry ``moving_labels`` (1 moving, 0 static, -1 unlabelled).

Sequences listed in ``sequences`` must all exist (DataFormatError); of a split taken from the learning
map, missing or empty sequence folders are counted in ``notes`` and warned once. Labels are all or
nothing: a sequence without labels/ beside labelled ones is a DataFormatError.
"""
from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np

from pc3d.errors import ConfigError, DataFormatError

from .dataset import PointCloudDataset
from .io import check_finite, read_bin, read_label, read_lines, read_matrix_lines
from .label_space import LabelSpace
from .learning_maps import LEARNING_MAPS, MODES, load_learning_map, lookup_table

__all__ = ["LEARNING_MAPS", "MODES", "SemanticKittiDataset", "lidar_poses", "load_learning_map", "lookup_table"]


def lidar_poses(path: str | PathLike, calib_path: str | PathLike) -> np.ndarray:
    """float64 [L, 4, 4] LiDAR poses of a sequence (poses.txt camera poses P as Tr^-1 P Tr)."""
    poses = read_matrix_lines(path, 12).reshape(-1, 3, 4)
    tr = None
    for line in read_lines(calib_path):
        key, _, values = line.partition(":")
        if key.strip() == "Tr":
            try:
                tr = np.array(values.split(), np.float64).reshape(3, 4)
            except ValueError:
                raise DataFormatError(calib_path, "Tr must be 12 numbers") from None
    if tr is None:
        raise DataFormatError(calib_path, "missing the 'Tr' (velodyne -> camera) line")
    check_finite(tr, calib_path)
    tr4 = np.eye(4)
    tr4[:3] = tr
    p4 = np.tile(np.eye(4), (len(poses), 1, 1))
    p4[:, :3] = poses
    singular = np.abs(np.linalg.det(p4)) < 1e-9
    if singular.any():
        raise DataFormatError(path, f"pose {int(np.flatnonzero(singular)[0]) + 1}: singular (a rotation expected)")
    if abs(np.linalg.det(tr4)) < 1e-9:
        raise DataFormatError(calib_path, "Tr is singular (a rigid transform expected)")
    return np.linalg.inv(tr4) @ p4 @ tr4


def _sequence_names(sequences) -> list[str]:
    """Two-digit sequence folder names ("00") of sequence numbers; ConfigError on a non-number or a repeat."""
    names = []
    for s in sequences:
        try:
            name = f"{int(s):02d}"
        except (TypeError, ValueError):
            raise ConfigError(f"sequences must be sequence numbers, got {s!r}") from None
        if name in names:
            raise ConfigError(f"sequence {name} is listed twice in {list(sequences)}")
        names.append(name)
    return names


class SemanticKittiDataset(PointCloudDataset):
    """Scans of SemanticKITTI sequences as samples with ``point_labels`` (and ``instance_ids``).

    root: the folder holding sequences/. split: train, valid or test (the devkit's sequence split)
    unless `sequences` lists sequence numbers. mode: "semantic" or "mos". learning_map: a devkit YAML
    (default: pc3d/data/learning_maps/ for the mode). n_past_scans: past scans merged into each sample.
    time_channel: add the time column (default: when n_past_scans > 0).
    """

    ignore_index = 0
    feature_names: tuple[str, ...] = ("intensity",)  # ("intensity", "time") with a time channel

    def __init__(self, root: str | PathLike, split: str = "train", mode: str = "semantic",
                 learning_map: str | PathLike | None = None, sequences=None, n_past_scans: int = 0,
                 time_channel: bool | None = None,
                 transforms=None, augmentations=None, voxelizer=None, point_cloud_range=None, voxel_size=None,
                 seed: int | None = None, skip_bad_frames: bool = False, training: bool | None = None):
        super().__init__(transforms, augmentations, voxelizer, point_cloud_range, voxel_size, seed, skip_bad_frames,
                         training)
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
        self.root, self.split, self.mode = Path(root), split, mode
        self.learning_map = learning_map
        self.config = load_learning_map(str(learning_map or LEARNING_MAPS / MODES[mode]))
        self.lut = lookup_table(self.config["learning_map"])
        inv = self.config["learning_map_inv"]
        self.class_names = [self.config["labels"][inv[i]] for i in sorted(inv)]
        split = {"val": "valid"}.get(split, split)
        self.split = split
        explicit = sequences is not None
        if sequences is None:
            if split not in self.config.get("split", {}):
                raise ConfigError(f"split {split!r} is not in the learning map's split {sorted(self.config['split'])}")
            sequences = self.config["split"][split]
        self.n_past_scans = int(n_past_scans)
        self.time_channel = self.n_past_scans > 0 if time_channel is None else bool(time_channel)
        self.feature_names = ("intensity", "time") if self.time_channel else ("intensity",)
        self.sequences = _sequence_names(sequences)
        folder = self.root / "sequences"
        scans = {s: sorted((folder / s / "velodyne").glob("*.bin")) for s in self.sequences}
        self.missing_sequences = [s for s in self.sequences if not scans[s]]
        if len(self.missing_sequences) == len(self.sequences):
            raise DataFormatError(folder, f"none of the sequences {self.sequences} has scans (velodyne/*.bin)")
        if self.missing_sequences:
            what = f"sequences {self.missing_sequences} have no scans (velodyne/*.bin)"
            if explicit:
                raise DataFormatError(folder, f"{what}; the dataset lists {self.sequences}")
            self.note(f"sequences of split {split!r} missing or empty", *(folder / s for s in self.missing_sequences))
        present = [s for s in self.sequences if scans[s]]
        labelled = [s for s in present if (folder / s / "labels").is_dir()]
        if labelled and len(labelled) < len(present):
            unlabelled = [s for s in present if s not in labelled]
            raise DataFormatError(folder / unlabelled[0], f"no labels/ folder, but sequences {labelled} have "
                                                          "labels (a split is labelled throughout or not at all)")
        for s in labelled:  # a label without its scan: the scan was lost, not the frame dropped on purpose
            orphans = sorted({p.stem for p in (folder / s / "labels").glob("*.label")} - {p.stem for p in scans[s]})
            if orphans:
                raise DataFormatError(folder / s / "velodyne" / f"{orphans[0]}.bin", f"missing, but labels/"
                                      f"{orphans[0]}.label exists ({len(orphans)} labels without their scan)")
        self.frames = [(s, p.stem) for s in present for p in scans[s]]
        self._poses: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def label_space(cls, mode: str = "semantic", learning_map: str | PathLike | None = None, **_) -> LabelSpace:
        """Train ids of `mode` written as the semantic-kitti-api's ``sequences/SS/predictions/NNNNNN.label``
        (raw ids through learning_map_inv); colours from the devkit's color_map."""
        from pc3d.eval.seg_writer import write_semantickitti_labels
        from pc3d.viz.colors import semantickitti_palette

        config = load_learning_map(str(learning_map or LEARNING_MAPS / MODES[mode]))
        inv = config["learning_map_inv"]

        def write(frame_id: str, ids: np.ndarray, out_dir: Path) -> Path:
            write_semantickitti_labels([{"frame_id": frame_id, "pred_labels": ids}], out_dir, inv)
            seq, _, name = frame_id.rpartition("/")
            return Path(out_dir) / "sequences" / seq / "predictions" / f"{name}.label"

        return LabelSpace([config["labels"][inv[i]] for i in sorted(inv)], write,
                          semantickitti_palette(inv, config["color_map"]))

    def write_predictions(self, predictions: list[dict], out_dir) -> Path:
        """`tools/test.py` hook: ``sequences/SS/predictions/NNNNNN.label`` with raw SemanticKITTI ids, one per
        point of each raw scan (checked against the scan's size: the api rejects any other count)."""
        if len(predictions) != len(self.frames):
            raise DataFormatError(self.root, f"{len(predictions)} predictions for {len(self.frames)} scans")
        space = self.label_space(self.mode, self.learning_map)
        for (seq, name), pred in zip(self.frames, predictions, strict=True):
            scan = self.root / "sequences" / seq / "velodyne" / f"{name}.bin"
            labels = np.asarray(pred["pred_labels"])
            if len(labels) * 16 != scan.stat().st_size:
                raise DataFormatError(scan, f"{len(labels)} predicted labels for a scan of {scan.stat().st_size // 16} "
                                            "points")
            space.write(f"{seq}/{name}", labels, out_dir)
        return Path(out_dir) / "sequences"

    def frame_id(self, index: int) -> str:
        return "/".join(self.frames[index])

    def sequence_poses(self, seq: str) -> tuple[np.ndarray, np.ndarray]:
        """(LiDAR poses [L, 4, 4], times [L]) of a sequence, read once."""
        if seq not in self._poses:
            folder = self.root / "sequences" / seq
            poses = lidar_poses(folder / "poses.txt", folder / "calib.txt")
            times = read_matrix_lines(folder / "times.txt", 1)[:, 0]
            if len(times) != len(poses):
                raise DataFormatError(folder / "times.txt", f"{len(times)} times for {len(poses)} poses in poses.txt "
                                                            "(one line per scan in each)")
            self._poses[seq] = (poses, times)
        return self._poses[seq]

    def read_scan(self, seq: str, name: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(points float32 [N, 4], train ids int64 [N] or None, instance ids int64 [N] or None)."""
        folder = self.root / "sequences" / seq
        scan = folder / "velodyne" / f"{name}.bin"
        points = read_bin(scan, 4)
        label_path = folder / "labels" / f"{name}.label"
        labelled = (folder / "labels").is_dir()
        if not len(points):
            if labelled and label_path.is_file() and label_path.stat().st_size:
                raise DataFormatError(scan, f"no points, but labels/{name}.label holds "
                                            f"{label_path.stat().st_size // 4} labels")
            self.note("empty scans (0 points)", scan)
        if not labelled:
            return points, None, None
        raw = read_label(label_path, len(points))
        semantic = (raw & 0xFFFF).astype(np.int64)
        unknown = semantic >= len(self.lut)
        train = np.where(unknown, -1, self.lut[np.minimum(semantic, len(self.lut) - 1)])
        if (train < 0).any():
            bad = np.unique(semantic[train < 0])[:5].tolist()
            raise DataFormatError(label_path, f"semantic ids {bad} are not in the learning map")
        return points, train, (raw >> 16).astype(np.int64)

    def load(self, index: int) -> dict:
        seq, name = self.frames[index]
        points, labels, instances = self.read_scan(seq, name)
        clouds, label_list, instance_list = [points], [labels], [instances]
        times = [np.zeros(len(points), np.float32)]
        if self.n_past_scans:
            poses, stamps = self.sequence_poses(seq)
            if not name.isdigit():
                raise DataFormatError(self.root / "sequences" / seq / "velodyne" / f"{name}.bin",
                                      "scan name is not a scan number (NNNNNN.bin): no pose to merge past scans")
            current = int(name)
            if current >= len(poses):
                raise DataFormatError(self.root / "sequences" / seq / "poses.txt",
                                      f"{len(poses)} poses, no pose for scan {name}")
            to_current = np.linalg.inv(poses[current])
            for past in range(current - 1, max(current - self.n_past_scans, 0) - 1, -1):
                pts, lab, inst = self.read_scan(seq, f"{past:0{len(name)}d}")
                m = to_current @ poses[past]
                pts = pts.copy()
                pts[:, :3] = (pts[:, :3].astype(np.float64) @ m[:3, :3].T + m[:3, 3]).astype(np.float32)
                clouds.append(pts)
                label_list.append(lab)
                instance_list.append(inst)
                times.append(np.full(len(pts), stamps[past] - stamps[current], np.float32))
        points = np.concatenate(clouds)
        if self.time_channel:
            points = np.concatenate([points, np.concatenate(times)[:, None]], 1)
        source = self.root / "sequences" / seq / "velodyne" / f"{name}.bin"
        sample = {"frame_id": f"{seq}/{name}", "points": points, "metadata": {"sequence": seq, "source": str(source)}}
        if self.n_past_scans:  # the batch contract's multi-scan keys: the current scan's rows come first
            sample["num_current_points"] = len(clouds[0])
            sample["point_time"] = np.concatenate(times)
            sample["point_frame"] = np.repeat(np.arange(len(clouds), dtype=np.int64), [len(c) for c in clouds])
        if labels is not None:
            sample["point_labels"] = np.concatenate(label_list)
            sample["instance_ids"] = np.concatenate(instance_list)
            if self.mode == "mos":  # train ids 0 unlabelled, 1 static, 2 moving -> -1 / 0 / 1
                sample["moving_labels"] = sample["point_labels"] - 1
        return sample
