"""SemanticKITTI (semantic segmentation and LiDAR moving-object segmentation), read as the devkit does:

    sequences/SS/velodyne/NNNNNN.bin   float32 x, y, z, remission   -> points [N, 4] (intensity)
    sequences/SS/labels/NNNNNN.label   uint32: semantic id (lower 16 bits) | instance id << 16
    sequences/SS/calib.txt, poses.txt, times.txt                     (multi-scan aggregation)

Raw semantic ids become train ids through the devkit's learning map (pc3d/data/learning_maps/
semantic-kitti.yaml for mode="semantic": 0 unlabelled .. 19; semantic-kitti-mos.yaml for mode="mos":
0 unlabelled, 1 static, 2 moving), so ``ignore_index`` is 0 as in the devkit. With n_past_scans > 0
the current scan and up to n_past_scans earlier scans of the sequence are merged in the current
LiDAR frame through the poses, with a time column (seconds, 0 for the current scan, negative for past
scans: times.txt differences, or -k * scan_period for the k-th scan before the current one when
scan_period is set, as 4DMOS / InsMOS do); the current scan's points come first
(``num_current_points`` of them, with ``point_time`` and ``point_frame`` per point: the batch contract's
multi-scan keys). In mode "mos" samples also carry ``moving_labels`` (1 moving, 0 static, -1 unlabelled).

Poses. ``lidar_poses``: P_lidar_i = Tr^-1 P_0^-1 P_i Tr (P_i the i-th line of poses.txt, left-camera
frame; Tr the velodyne -> camera line of calib.txt), so scan 0 is the origin whatever poses.txt starts
at. A point of scan j goes to the frame of scan i by ``relative_pose(P_lidar_i, P_lidar_j)`` =
inv(P_lidar_i) P_lidar_j (float64), applied by ``transform_points`` (float64 product, float32 result).

The MOS window (past_voxel_size set: the configs of 4D MOS). Each past scan is reduced once, in its
own LiDAR frame, to one point per occupied voxel of past_voxel_size (``reduce_scan``: the mean of the
voxel's points, all columns; labels and instance ids by majority), then moved into the current frame;
the current scan stays raw. ``pc3d.infer.scan_window.ScanWindow`` keeps the reduced scans of a stream
and builds the same cloud with the same functions, so training and streaming feed the network the
same 4D input bit for bit (tests/test_mos_stream.py).

Boxes (mode "mos", labelled sequences): ``gt_boxes`` [M, 7] / ``gt_labels`` (1 car, 2 pedestrian,
3 cyclist: ``box_class_names``) of the current scan's instances of raw classes car (10, 252),
person (30, 254) and bicyclist (31, 253), moving or not, with at least MIN_BOX_POINTS points. A
sequence with a ``boxes/`` folder (the simulator writes one: ``NNNNNN.txt`` lines "instance raw_id x
y z dx dy dz heading", LiDAR frame, exact ground truth) gives its boxes, else one with InsMOS's
``boundingbox_label/`` folder (``NNNNNN.npy``, pc3d.data.insmos_boxes: its car / pedestrian / cyclist
boxes, as InsMOS trains on them); otherwise each instance's box is fitted to its points (``fit_box``:
heading along the principal axis of the points' BEV covariance, extent and centre from the min / max of
the points in that rotated frame and in z).

Sequences listed in ``sequences`` must all exist (DataFormatError); of a split taken from the learning
map, missing or empty sequence folders are counted in ``notes`` and warned once. Labels are all or
nothing: a sequence without labels/ beside labelled ones is a DataFormatError.
"""
from __future__ import annotations

from collections import OrderedDict
from os import PathLike
from pathlib import Path

import numpy as np
from pc3d_ops import geometry as _geometry

from pc3d.errors import ConfigError, DataFormatError

from .dataset import PointCloudDataset
from .insmos_boxes import read_insmos_boxes
from .io import check_finite, read_bin, read_label, read_lines, read_matrix_lines
from .label_space import LabelSpace
from .learning_maps import LEARNING_MAPS, MODES, load_learning_map, lookup_table
from .lidar_boxes import BOX_CLASS_NAMES, BOX_CLASS_OF_RAW, MIN_BOX_POINTS, fit_box, instance_boxes

__all__ = ["BOX_CLASS_NAMES", "LEARNING_MAPS", "MODES", "SemanticKittiDataset", "fit_box", "instance_boxes",
           "lidar_poses", "load_learning_map", "lookup_table", "reduce_scan", "relative_pose", "transform_points",
           "voxel_mode"]

def lidar_poses(path: str | PathLike, calib_path: str | PathLike) -> np.ndarray:
    """float64 [L, 4, 4] LiDAR poses of a sequence: Tr^-1 P_0^-1 P_i Tr of the poses.txt camera poses P_i
    (4DMOS's normalisation: scan 0 is the origin); DataFormatError naming poses.txt / calib.txt when one
    is missing, non-numeric, singular, or calib.txt has no Tr line."""
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
    if not len(p4):
        raise DataFormatError(path, "no poses (one 3 x 4 pose per scan expected)")
    return np.linalg.inv(tr4) @ np.linalg.inv(p4[0]) @ p4 @ tr4


def relative_pose(current: np.ndarray, past: np.ndarray) -> np.ndarray:
    """float64 [4, 4] taking points of the scan with LiDAR pose `past` into the frame of pose `current`:
    inv(current) @ past."""
    return np.linalg.inv(current) @ past


def transform_points(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """A copy of float32 points [N, 3 + C] with x, y, z moved by the rigid [4, 4] `m` (float64 product,
    float32 result, one pass: `pc3d_ops.geometry.affine_points`); the other columns are kept."""
    m = np.asarray(m, np.float64)
    return _geometry.affine_points(np.ascontiguousarray(points, np.float32), np.ascontiguousarray(m[:3, :3]),
                                   np.ascontiguousarray(m[:3, 3]))


def train_ids(raw: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """int64 train ids of raw .label values (uint32, the class in the lower 16 bits) through a learning map's
    lookup table (`lookup_table`); -1 for a class the map does not know."""
    semantic = (np.asarray(raw) & 0xFFFF).astype(np.int64)
    return np.where(semantic < len(lut), lut[np.minimum(semantic, len(lut) - 1)], -1)


def voxel_mode(values: np.ndarray, inverse: np.ndarray, num_voxels: int) -> np.ndarray:
    """[num_voxels] the most frequent value of each voxel's points (ties: the smallest value); values and
    inverse [N] (voxel of every point, each voxel has at least one point)."""
    order = np.lexsort((values, inverse))
    inv, val = inverse[order], values[order]
    start = np.ones(len(inv), bool)
    start[1:] = (inv[1:] != inv[:-1]) | (val[1:] != val[:-1])
    first = np.flatnonzero(start)
    counts = np.diff(np.append(first, len(inv)))
    run_voxel, run_value = inv[first], val[first]
    pick = np.lexsort((-counts, run_voxel))  # per voxel: most points first, then the smallest value
    lead = np.ones(len(pick), bool)
    lead[1:] = run_voxel[pick][1:] != run_voxel[pick][:-1]
    out = np.zeros(num_voxels, values.dtype)
    out[run_voxel[pick][lead]] = run_value[pick][lead]
    return out


def reduce_scan(points: np.ndarray, voxel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """(reduced float32 [M, 3 + C], inverse int64 [N]): one point per occupied voxel of a cubic grid of
    `voxel_size` anchored at the scan's lowest point (nothing cropped), the mean of its points in every
    column (float64 sums in point order, float32 result: deterministic), voxels in (z, y, x) order;
    inverse maps each input point to its reduced point. points: float32 [N, 3 + C], finite."""
    from pc3d.voxel.dynamic import grid_sample

    if not len(points):
        return points[:0].copy(), np.zeros(0, np.int64)
    coords, _, inverse, _ = grid_sample(points, voxel_size, nan_policy="raise")
    order = np.argsort(inverse, kind="stable")
    starts = np.flatnonzero(np.diff(inverse[order], prepend=-1))
    sums = np.add.reduceat(points[order].astype(np.float64), starts, axis=0)
    counts = np.diff(np.append(starts, len(points)))
    return (sums / counts[:, None]).astype(np.float32), inverse.astype(np.int64)


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
    unless `sequences` lists sequence numbers, or is "all": every numbered folder under sequences/ (a
    simulated world of many short sequences, with its held-out frames in another world).
    mode: "semantic" or "mos". learning_map: a devkit YAML
    (default: pc3d/data/learning_maps/ for the mode). n_past_scans: past scans merged into each sample.
    time_channel: add the time column (default: when n_past_scans > 0). scan_period: seconds between
    scans for the time column (None: from times.txt). past_voxel_size: reduce each past scan to one
    point per voxel of this size in its own frame (the MOS window, see the module docstring; None: raw
    past points). boxes: gt_boxes / gt_labels of the current scan (default: in mode "mos").
    past_scan_cache: keep this many reduced past scans in memory (LRU, per DataLoader worker; about 1 MB
    each for a 1024-column scan at 0.1 m), so that epochs after the first read and reduce only the
    current scan of each window; 0: none.
    labelled_frames: a frame list (pc3d.data.frame_selection, lines ``SS/NNNNNN``) naming the frames whose
    labels may be used (label-efficient training; a training dataset only, evaluation reads every label); the
    other frames' label files are never read: their point_labels are all ignore_index and
    ``metadata["labelled"]`` is False. labelled_only: keep only the listed frames (the supervised-only baseline).
    labelled_repeat: list the labelled frames this many times (a mean teacher's batches then hold labelled
    frames: at 5 % labels, 20 repeats make about half of each epoch labelled).
    full_windows: a training dataset keeps only the scans with n_past_scans scans before them (4DMOS trains no
    window on a sequence's first scans); evaluation keeps every scan (the benchmark scores them all).
    """

    ignore_index = 0
    feature_names: tuple[str, ...] = ("intensity",)  # ("intensity", "time") with a time channel
    box_class_names: tuple[str, ...] = BOX_CLASS_NAMES  # gt_labels 1..3 (mode "mos")

    def __init__(self, root: str | PathLike, split: str = "train", mode: str = "semantic",
                 learning_map: str | PathLike | None = None, sequences=None, n_past_scans: int = 0,
                 time_channel: bool | None = None, scan_period: float | None = None,
                 past_voxel_size: float | None = None, boxes: bool | None = None, past_scan_cache: int = 0,
                 transforms=None, augmentations=None, voxelizer=None, point_cloud_range=None, voxel_size=None,
                 seed: int | None = None, skip_bad_frames: bool = False, training: bool | None = None,
                 labelled_frames: str | PathLike | None = None, labelled_only: bool = False,
                 labelled_repeat: int = 1, full_windows: bool = False):
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
        if sequences == "all":
            found = sorted(p.name for p in (self.root / "sequences").glob("*") if p.is_dir() and p.name.isdigit())
            if not found:
                raise DataFormatError(self.root / "sequences", "sequences: all, but no numbered sequence folder")
            sequences = found
        elif sequences is None:
            if split not in self.config.get("split", {}):
                raise ConfigError(f"split {split!r} is not in the learning map's split {sorted(self.config['split'])}")
            sequences = self.config["split"][split]
        self.n_past_scans = int(n_past_scans)
        if self.n_past_scans < 0:
            raise ConfigError(f"n_past_scans must be >= 0, got {n_past_scans!r}")
        for key, value in (("scan_period", scan_period), ("past_voxel_size", past_voxel_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or not value > 0):
                raise ConfigError(f"{key} must be a number > 0 or null, got {value!r}")
        self.scan_period = None if scan_period is None else float(scan_period)
        self.past_voxel_size = None if past_voxel_size is None else float(past_voxel_size)
        self.boxes = mode == "mos" if boxes is None else bool(boxes)
        if isinstance(past_scan_cache, bool) or not isinstance(past_scan_cache, int) or past_scan_cache < 0:
            raise ConfigError(f"past_scan_cache must be an int >= 0, got {past_scan_cache!r}")
        self.past_scan_cache = past_scan_cache
        self._reduced: OrderedDict = OrderedDict()  # (seq, name) -> reduced (points, labels, instance ids)
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
        if full_windows and self.n_past_scans and self.is_training:  # scan numbers 0 .. n_past_scans - 1 go
            self.frames = [(s, n) for s, n in self.frames if not n.isdigit() or int(n) >= self.n_past_scans]
        self.unlabelled: set[tuple[str, str]] = set()
        if labelled_frames is not None and self.is_training:  # evaluation reads every label
            self._restrict_labels(Path(labelled_frames), labelled_only, labelled_repeat)
        self._poses: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _restrict_labels(self, path: Path, labelled_only: bool, repeat: int) -> None:
        """Apply a frame list (see labelled_frames): drop or mark the frames it does not name; list the named
        ones `repeat` times. Every listed frame must be one of the dataset's: DataFormatError naming the list and
        the first missing frames otherwise (a list made for other scans would silently train on fewer labels)."""
        if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
            raise ConfigError(f"labelled_repeat must be an int >= 1, got {repeat!r}")
        from pc3d.data.frame_selection import read_frame_list

        listed = read_frame_list(path)
        present = {(int(seq), int(name)) for seq, name in self.frames if seq.isdigit() and name.isdigit()}
        missing = [pair for pair in dict.fromkeys(listed) if pair not in present]
        if missing:
            first = ", ".join(f"{seq:02d}/{scan:06d}" for seq, scan in missing[:5])
            raise DataFormatError(path, f"{len(missing)} of its {len(set(listed))} frames are not among the "
                                        f"{len(self.frames)} scans of sequences {self.sequences}: {first}"
                                        f"{', ...' if len(missing) > 5 else ''}")
        listed = set(listed)
        named = {frame for frame in self.frames if frame[1].isdigit() and (int(frame[0]), int(frame[1])) in listed}
        if not named:
            raise DataFormatError(path, f"names none of the {len(self.frames)} frames of sequences {self.sequences}")
        self.unlabelled = set() if labelled_only else {frame for frame in self.frames if frame not in named}
        kept = [frame for frame in self.frames if frame in named] * repeat
        self.frames = kept + ([] if labelled_only else sorted(self.unlabelled))

    @classmethod
    def label_space(cls, mode: str = "semantic", learning_map: str | PathLike | None = None, **_) -> LabelSpace:
        """Train ids of `mode` written as the semantic-kitti-api's ``sequences/SS/predictions/NNNNNN.label``
        (raw ids through learning_map_inv); colours from the devkit's color_map."""
        from pc3d.eval.seg_writer import write_semantickitti_labels
        from pc3d.viz.colors import semantickitti_palette

        config = load_learning_map(str(learning_map or LEARNING_MAPS / MODES[mode]))
        inv = config["learning_map_inv"]

        lut = lookup_table(config["learning_map"])

        def write(frame_id: str, ids: np.ndarray, out_dir: Path) -> Path:
            write_semantickitti_labels([{"frame_id": frame_id, "pred_labels": ids}], out_dir, inv)
            seq, _, name = frame_id.rpartition("/")
            return Path(out_dir) / "sequences" / seq / "predictions" / f"{name}.label"

        def read(path: Path, count: int) -> np.ndarray:
            return train_ids(read_label(path, count), lut)

        return LabelSpace([config["labels"][inv[i]] for i in sorted(inv)], write, read,
                          semantickitti_palette(inv, config["color_map"]))

    def write_predictions(self, predictions: list[dict], out_dir) -> Path:
        """`tools/test.py` hook: ``sequences/SS/predictions/NNNNNN.label``, one id per point of each raw scan
        (checked against the scan's size: the api rejects any other count). The predictions follow the
        dataset's task (pc3d.models.contract): mode "semantic" -> segmentation ``pred_labels`` as raw ids
        through learning_map_inv; mode "mos" -> the ``moving`` flags of the current scan as the MOS
        benchmark's 9 (static) / 251 (moving) (pc3d.eval.mos_writer)."""
        from pc3d.eval.mos_writer import write_mos_predictions

        if len(predictions) != len(self.frames):
            raise DataFormatError(self.root, f"{len(predictions)} predictions for {len(self.frames)} scans")
        key = "moving" if self.mode == "mos" else "pred_labels"
        space = None if self.mode == "mos" else self.label_space(self.mode, self.learning_map)
        for (seq, name), pred in zip(self.frames, predictions, strict=True):
            scan = self.root / "sequences" / seq / "velodyne" / f"{name}.bin"
            if key not in pred:
                raise DataFormatError(scan, f"a {self.mode} prediction needs {key!r}, got keys {sorted(pred)}")
            labels = np.asarray(pred[key])
            if len(labels) * 16 != scan.stat().st_size:
                raise DataFormatError(scan, f"{len(labels)} predicted labels for a scan of {scan.stat().st_size // 16} "
                                            "points")
            if space is None:
                write_mos_predictions([{"frame_id": f"{seq}/{name}", "moving": labels}], out_dir)
            else:
                space.write(f"{seq}/{name}", labels, out_dir)
        return Path(out_dir) / "sequences"

    def frame_id(self, index: int) -> str:
        return "/".join(self.frames[index])

    def sequence_poses(self, seq: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(LiDAR poses [L, 4, 4], times [L] or None with a scan_period) of a sequence, read once;
        DataFormatError naming poses.txt when it has fewer poses than the sequence has scans."""
        if seq not in self._poses:
            folder = self.root / "sequences" / seq
            poses = lidar_poses(folder / "poses.txt", folder / "calib.txt")
            numbers = [int(name) for s, name in self.frames if s == seq and name.isdigit()]
            if numbers and max(numbers) >= len(poses):
                raise DataFormatError(folder / "poses.txt", f"{len(poses)} poses for {max(numbers) + 1} scans "
                                                            "(velodyne/): one pose per scan expected")
            times = None if self.scan_period else read_matrix_lines(folder / "times.txt", 1)[:, 0]
            if times is not None and len(times) != len(poses):
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
        train = train_ids(raw, self.lut)
        if (train < 0).any():
            bad = np.unique(raw[train < 0] & 0xFFFF)[:5].tolist()
            raise DataFormatError(label_path, f"semantic ids {bad} are not in the learning map")
        return points, train, (raw >> 16).astype(np.int64)

    def read_boxes(self, seq: str, name: str, points: np.ndarray, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(gt_boxes float32 [M, 7], gt_labels int64 [M]) of a scan: boxes/NNNNNN.txt when the sequence has a
        boxes/ folder, else boundingbox_label/NNNNNN.npy (InsMOS's), else fitted to the instances (see the module
        docstring)."""
        semantic, instance = (raw & 0xFFFF).astype(np.int64), (raw >> 16).astype(np.int64)
        folder = self.root / "sequences" / seq / "boxes"
        insmos = self.root / "sequences" / seq / "boundingbox_label"
        if not folder.is_dir() and insmos.is_dir():
            return read_insmos_boxes(insmos / f"{name}.npy")
        if not folder.is_dir():
            boxes, labels, _ = instance_boxes(points[:, :3], semantic, instance)
            return boxes, labels
        path = folder / f"{name}.txt"
        rows = read_matrix_lines(path, 9)
        if (rows[:, :2] != np.round(rows[:, :2])).any() or (rows[:, :2] < 0).any():
            raise DataFormatError(path, "instance and raw class ids must be whole numbers >= 0")
        if (rows[:, 5:8] <= 0).any():
            raise DataFormatError(path, "box sizes (dx, dy, dz) must be > 0")
        labels = np.array([BOX_CLASS_OF_RAW.get(int(r), 0) for r in rows[:, 1]], np.int64)
        counts = np.bincount(instance, minlength=int(rows[:, 0].max(initial=0)) + 1)
        keep = (labels > 0) & (counts[rows[:, 0].astype(np.int64)] >= MIN_BOX_POINTS)
        return rows[keep, 2:9].astype(np.float32), labels[keep]

    def load_unlabelled(self, seq: str, name: str) -> dict:
        """A frame outside labelled_frames: its scan with every point_labels ignore_index (its label file is
        not read) and metadata["labelled"] False."""
        if self.n_past_scans:
            raise ConfigError("labelled_frames with n_past_scans > 0 is not supported")
        source = self.root / "sequences" / seq / "velodyne" / f"{name}.bin"
        points = read_bin(source, 4)
        return {"frame_id": f"{seq}/{name}", "points": points,
                "point_labels": np.full(len(points), self.ignore_index, np.int64),
                "instance_ids": np.zeros(len(points), np.int64),
                "metadata": {"sequence": seq, "source": str(source), "labelled": False}}

    def past_scan(self, seq: str, name: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """A past scan of a window in its own frame: ``read_scan``, reduced with past_voxel_size (labels and
        instance ids by majority); with past_scan_cache, the last past_scan_cache reduced scans are kept
        (the same arrays: samples are bitwise those of an uncached dataset)."""
        key = (seq, name)
        if key in self._reduced:
            self._reduced.move_to_end(key)
            return self._reduced[key]
        pts, lab, inst = self.read_scan(seq, name)
        if self.past_voxel_size is None:
            return pts, lab, inst
        pts, inverse = reduce_scan(pts, self.past_voxel_size)
        if lab is not None:
            lab, inst = voxel_mode(lab, inverse, len(pts)), voxel_mode(inst, inverse, len(pts))
        if self.past_scan_cache:
            self._reduced[key] = (pts, lab, inst)
            while len(self._reduced) > self.past_scan_cache:
                self._reduced.popitem(last=False)
        return pts, lab, inst

    def load(self, index: int) -> dict:
        seq, name = self.frames[index]
        if (seq, name) in self.unlabelled:
            return self.load_unlabelled(seq, name)
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
            for past in range(current - 1, max(current - self.n_past_scans, 0) - 1, -1):
                pts, lab, inst = self.past_scan(seq, f"{past:0{len(name)}d}")
                clouds.append(transform_points(pts, relative_pose(poses[current], poses[past])))
                label_list.append(lab)
                instance_list.append(inst)
                dt = -(current - past) * self.scan_period if self.scan_period else stamps[past] - stamps[current]
                times.append(np.full(len(pts), dt, np.float32))
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
            if self.boxes:
                raw = read_label(self.root / "sequences" / seq / "labels" / f"{name}.label", len(clouds[0]))
                sample["gt_boxes"], sample["gt_labels"] = self.read_boxes(seq, name, clouds[0], raw)
        return sample
