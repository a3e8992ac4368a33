"""The ring buffer of streaming 4D moving-object segmentation: the past scans of a sequence, each
reduced once, re-expressed in every new current frame by the relative pose.

The window (the input of a 4D MOS network, the same definition as ``SemanticKittiDataset`` with
``past_voxel_size``, see pc3d.data.semantickitti):

- the current scan: its raw points, time 0, ``point_frame`` 0, first in the cloud;
- the k-th scan before it (k = 1 .. n_past_scans, as far as the sequence goes back): reduced ONCE, in
  its own LiDAR frame, to one point per occupied voxel of ``voxel_size`` (``reduce_scan``: the mean of
  the voxel's points), then moved into the current frame by ``relative_pose(P_current, P_past)`` =
  inv(P_current) P_past of the two absolute LiDAR poses (``transform_points``: float64 product, float32
  result), time -k * scan_period, ``point_frame`` k;
- the cloud is those blocks in that order with the time column appended last; the collate's
  TemporalVoxelizer then makes the 4D voxels (b, t, z, y, x) and the network averages each voxel's
  points.

Every step is a pure function of (the raw scan, its pose), so the buffer, which keeps the reduced
scans and their absolute poses (never the raw points, never a chained relative pose), produces the
same cloud, bit for bit, as reading the window from the files again: the 4D voxels and their mean
features are then the same too (tests/test_mos_stream.py). Per frame a stream therefore reduces one
scan (the new one, kept for the next frames) and transforms the n_past_scans reduced ones; the 4D
voxelization of the whole window is the collate's, as in training.

    window = ScanWindow(n_past_scans=9, voxel_size=0.1, scan_period=0.1)
    sample = window(frame)            # a SourceFrame with extra["pose"] (and extra["scan"]) -> a sample
    window.start_sequence(name)       # drop the buffer (tools/infer.py calls it when the sequence changes)
"""
from __future__ import annotations

from collections import deque

import numpy as np

from pc3d.data.semantickitti import reduce_scan, relative_pose, transform_points
from pc3d.errors import ConfigError, DataFormatError


class ScanWindow:
    """Past scans (reduced in their own frame, with their LiDAR poses) of one sequence, at most
    n_past_scans of them (voxel_size None: kept raw, the window of a dataset without past_voxel_size);
    ``__call__(frame)`` -> the multi-scan sample of the frame (batch contract keys frame_id, points
    [N, 3 + C (+ 1)] with time last when time_channel, num_current_points, point_time, point_frame; and
    metadata window_scans (the scan number of each block, current first) and window_inverses (per block:
    raw point -> row of the block, None for the raw current scan): what ``scan_log_odds`` needs to give
    a window's per-point outputs back to the raw points of every scan in it).

    The frame's points may carry a time column already (a source fills it with 0 for a model trained
    on a time feature): with ``time_column`` (its index, the last column) it is replaced by the window's
    times. Scans are numbered by ``frame.extra["scan"]`` (else one after the other): a scan more than
    n_past_scans before the current one leaves the window, so a skipped frame leaves a gap as the
    dataset's window would have.
    """

    def __init__(self, n_past_scans: int, voxel_size: float | None, scan_period: float,
                 time_column: int | None = None, time_channel: bool = True):
        if isinstance(n_past_scans, bool) or not isinstance(n_past_scans, int | np.integer) or n_past_scans < 0:
            raise ConfigError(f"n_past_scans must be an int >= 0, got {n_past_scans!r}")
        for key, value in (("voxel_size", voxel_size), ("scan_period", scan_period)):
            if value is None and key == "voxel_size":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"{key} must be a number > 0, got {value!r}")
        self.n_past_scans, self.scan_period = int(n_past_scans), float(scan_period)
        self.voxel_size = None if voxel_size is None else float(voxel_size)
        self.time_column, self.time_channel = time_column, bool(time_channel)
        # (scan number, reduced points, pose, inverse: raw point -> reduced row, None when kept raw)
        self.scans: deque[tuple[int, np.ndarray, np.ndarray, np.ndarray | None]] = deque()
        self.sequence: str | None = None
        self._next = 0

    def start_sequence(self, name: str | None = None) -> None:
        """Forget the past scans (a new sequence starts)."""
        self.scans.clear()
        self.sequence, self._next = name, 0

    def _base(self, points: np.ndarray, frame_id) -> np.ndarray:
        if self.time_column is None:
            return points
        if self.time_column != points.shape[1] - 1:
            raise DataFormatError(frame_id, f"the time column must be the last one ({points.shape[1] - 1}), "
                                            f"got column {self.time_column}")
        return np.ascontiguousarray(points[:, :self.time_column])

    def window(self, points: np.ndarray, pose: np.ndarray, scan: int, frame_id: str = "") -> dict:
        """The sample of a scan (float32 [N, 3 + C], no time column) with LiDAR pose [4, 4] and number
        `scan`; the scan then joins the buffer (reduced) for the scans after it."""
        pose = np.asarray(pose, np.float64)
        if pose.shape != (4, 4) or not np.isfinite(pose).all():
            raise DataFormatError(frame_id, f"a LiDAR pose must be a finite 4 x 4 matrix, got shape {pose.shape}")
        while self.scans and (scan - self.scans[0][0] > self.n_past_scans or self.scans[0][0] >= scan):
            self.scans.popleft()
        clouds, times, frames = [points], [np.zeros(len(points), np.float32)], [0]
        numbers, inverses = [scan], [None]
        for number, reduced, past_pose, inverse in reversed(self.scans):  # newest first, as the dataset lists them
            k = scan - number
            clouds.append(transform_points(reduced, relative_pose(pose, past_pose)))
            times.append(np.full(len(reduced), -k * self.scan_period, np.float32))
            frames.append(k)
            numbers.append(number)
            inverses.append(inverse)
        if self.n_past_scans:
            kept, inverse = (points, None) if self.voxel_size is None else reduce_scan(points, self.voxel_size)
            self.scans.append((scan, kept, pose, inverse))
            while self.scans[0][0] < scan + 1 - self.n_past_scans:  # out of the next scan's window
                self.scans.popleft()
        point_time = np.concatenate(times)
        cloud = np.concatenate(clouds)
        if self.time_channel:
            cloud = np.concatenate([cloud, point_time[:, None]], 1)
        return {"frame_id": frame_id, "points": cloud, "num_current_points": len(points), "point_time": point_time,
                "point_frame": np.repeat(np.asarray(frames, np.int64), [len(c) for c in clouds]), "seed": 0,
                "metadata": {"window_scans": numbers, "window_inverses": inverses}}

    def __call__(self, frame) -> dict:
        """The sample of a SourceFrame (its extra["pose"]: the LiDAR pose; extra["scan"]: its number)."""
        pose = frame.extra.get("pose")
        if pose is None:
            raise DataFormatError(frame.source, "a model of past scans needs the scans' poses (a SemanticKITTI "
                                                "sequence folder with poses.txt and calib.txt, a Waymo segment)")
        if frame.sequence != self.sequence:
            self.start_sequence(frame.sequence)
        scan = int(frame.extra.get("scan", self._next))
        self._next = scan + 1
        return self.window(self._base(frame.points, frame.frame_id), pose, scan, frame.frame_id)


class WindowedPrepare:
    """tools/infer.py's prepare step of a 4D MOS model: frame -> the window's sample -> `then` (the run's
    evaluation transforms, sample -> sample); ``start_sequence`` (called by pc3d.infer.stream.stream when
    a sequence starts) empties the window."""

    def __init__(self, window: ScanWindow, then=None):
        self.window, self.then = window, then

    def start_sequence(self, name: str | None = None) -> None:
        self.window.start_sequence(name)

    def __call__(self, frame) -> dict:
        sample = self.window(frame)
        # what a Bayes filter needs to give the window's outputs back to each scan (pc3d.infer.mos_filter)
        frame.extra["window"] = {"point_frame": sample["point_frame"], "metadata": sample["metadata"]}
        return sample if self.then is None else self.then(sample)


def window_of_dataset(dataset_cfg) -> ScanWindow:
    """The ScanWindow of a dataset config (n_past_scans, past_voxel_size, scan_period, time_channel): the
    window the model was trained on. ConfigError when it has no scan_period (its times came from
    times.txt, which a stream does not read)."""
    n_past = int(dataset_cfg.get("n_past_scans") or 0)
    period = dataset_cfg.get("scan_period")
    if period is None:
        raise ConfigError(f"dataset.scan_period is null: the model's window times came from times.txt; streaming "
                          f"{n_past} past scans needs a fixed scan period (set dataset.scan_period, e.g. 0.1)")
    time_channel = dataset_cfg.get("time_channel")
    return ScanWindow(n_past, dataset_cfg.get("past_voxel_size"), float(period),
                      time_channel=n_past > 0 if time_channel is None else bool(time_channel))


def scan_log_odds(sample: dict, log_odds: np.ndarray, measured: np.ndarray | None = None
                  ) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(scan number, log-odds float32 [N_scan], measured bool [N_scan]) for every raw point of every scan of a
    ScanWindow sample, from per-window-point log_odds [N] (and measured [N]: True where the point had a
    voxel; default all): a past scan's raw point takes its reduced point's value."""
    frame = sample["point_frame"]
    measured = np.ones(len(log_odds), bool) if measured is None else np.asarray(measured, bool)
    meta = sample["metadata"]
    out = []
    for number, inverse in zip(meta["window_scans"], meta["window_inverses"], strict=True):
        rows = np.flatnonzero(frame == meta["window_scans"][0] - number)  # point_frame: scans before the current
        if inverse is not None:
            rows = rows[inverse]
        out.append((int(number), np.asarray(log_odds)[rows], measured[rows]))
    return out
