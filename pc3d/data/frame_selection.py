"""Which frames of a sequence get labels: ST-RFD (Less is More) against the uniform baseline.

A LiDAR sequence recorded at 10 Hz repeats itself wherever the sensor barely moves (a stop at a
crossing gives dozens of near-identical scans). ST-RFD (spatio-temporal redundant frame downsampling)
spends the label budget over the sensor's *motion* instead of over time:

    motion(t)   = sum over s <= t of  |translation step s|  +  metres_per_radian x |heading step s|
    keep k      = max(1, round(fraction x F)) frames; frame j is the one whose motion is nearest
                  (j + 0.5) / k of the total, each frame taken once (the next nearest when taken)

so frames cluster where the sensor moves and a stop contributes one frame at most. A sequence that never
moves falls back to the uniform choice. Over several sequences (``select_frames``) the budget is one: the
sequences are laid end to end on the motion axis, so a still sequence costs about one frame.
``uniform_frames`` is the baseline: k frames evenly spaced in time (over all sequences in order).
Selections are written as text lists, one ``SS/NNNNNN`` per line (sequence / scan, as SemanticKITTI names
them), so a run names the list it trained on and can be reproduced. A frame is named by its scan number, not by its
position: ``select_frames`` takes each sequence's scan numbers (the scans present, which may start after 0 or
have gaps), and a sequence without scans contributes nothing.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from os import PathLike
from pathlib import Path

import numpy as np

from pc3d.errors import ConfigError, DataFormatError

METRES_PER_RADIAN = 10.0  # a turn of 1 rad counts as much new scene as 10 m of travel
SEQUENCE_GAP = 10.0  # metres of motion between two sequences (another place): a still sequence's worth


def budget(num_frames: int, fraction: float) -> int:
    """Frames to keep of num_frames at `fraction` (0 < fraction <= 1): at least one (none of no frames)."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"label fraction must be in (0, 1], got {fraction!r}")
    return max(1, min(num_frames, round(fraction * num_frames))) if num_frames > 0 else 0


def motion_coordinate(poses: np.ndarray, metres_per_radian: float = METRES_PER_RADIAN) -> np.ndarray:
    """float64 [F]: the cumulative motion of poses [F, 4, 4] (sensor -> world), 0 at the first frame (empty for
    no poses)."""
    poses = np.asarray(poses, np.float64)
    if poses.ndim != 3 or poses.shape[1:] != (4, 4):
        raise ConfigError(f"poses must be [F, 4, 4], got {poses.shape}")
    if not len(poses):
        return np.zeros(0)
    step = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1)
    heading = np.unwrap(np.arctan2(poses[:, 1, 0], poses[:, 0, 0]))
    step += metres_per_radian * np.abs(np.diff(heading))
    return np.concatenate([[0.0], np.cumsum(step)])


def uniform_frames(num_frames: int, fraction: float) -> np.ndarray:
    """int64 [k]: k frames evenly spaced in time (the centre of each of k equal spans)."""
    k = budget(num_frames, fraction)
    return np.unique(((np.arange(k) + 0.5) * num_frames / k).astype(np.int64))


def st_rfd_frames(poses: np.ndarray, fraction: float, metres_per_radian: float = METRES_PER_RADIAN) -> np.ndarray:
    """int64 [k], sorted: the frames ST-RFD keeps of a sequence with poses [F, 4, 4] (see the module doc)."""
    motion = motion_coordinate(poses, metres_per_radian)
    if not len(motion) or motion[-1] <= 0:
        return uniform_frames(len(motion), fraction)
    return _spread(motion, budget(len(motion), fraction))


def write_frame_list(path: str | PathLike, frames: Iterable[tuple[int, int]]) -> Path:
    """Write (sequence, scan) pairs as lines ``SS/NNNNNN``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{int(seq):02d}/{int(scan):06d}\n" for seq, scan in frames))
    return path


def read_frame_list(path: str | PathLike) -> list[tuple[int, int]]:
    """The (sequence, scan) pairs of a list written by write_frame_list; DataFormatError naming the file and
    line when a line is not ``SS/NNNNNN``."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "frame list does not exist")
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        seq, _, scan = line.strip().partition("/")
        if not (seq.isdigit() and scan.isdigit()):
            raise DataFormatError(path, f"line {number}: expected 'SS/NNNNNN', got {line!r}")
        pairs.append((int(seq), int(scan)))
    return pairs


def select_frames(sequences: Sequence[tuple[int, Sequence[int], np.ndarray]], fraction: float,
                  method: str = "st_rfd", metres_per_radian: float = METRES_PER_RADIAN,
                  sequence_gap: float = SEQUENCE_GAP) -> list[tuple[int, int]]:
    """(sequence, scan) pairs kept of every (sequence id, scan numbers [F], poses [F, 4, 4]) at `fraction` of all
    frames. The scan numbers are those of the sequence's scans present, increasing (they may start after 0 or
    have gaps), the poses theirs; the pairs name those numbers. A sequence without scans contributes nothing.

    Both spend one budget, budget(all frames, fraction). "uniform": evenly spaced over the sequences' frames
    in order (every n-th frame). "st_rfd": evenly spaced over the sequences laid end to end on the motion
    axis, each starting `sequence_gap` metres after the previous one ended (a new place), so a sequence where
    the sensor stands still costs about one frame and the budget goes where the sensor moves."""
    if method not in ("st_rfd", "uniform"):
        raise ConfigError(f"frame selection method must be 'st_rfd' or 'uniform', not {method!r}")
    parts = [part for part in map(_sequence, sequences) if len(part[1])]
    owner = [(seq, int(scan)) for seq, scans, _ in parts for scan in scans]
    if not owner:
        return []
    if method == "uniform":
        return [owner[i] for i in uniform_frames(len(owner), fraction)]
    axis, offset = [], 0.0
    for _, _, poses in parts:
        motion = motion_coordinate(poses, metres_per_radian)
        axis.append(offset + sequence_gap + motion)
        offset += sequence_gap + motion[-1]
    kept = _spread(np.concatenate(axis) if axis else np.zeros(0), budget(len(owner), fraction))
    return [owner[i] for i in kept]


def _sequence(entry) -> tuple[int, np.ndarray, np.ndarray]:
    """(sequence id, scan numbers int64 [F], poses [F, 4, 4]) of a select_frames entry; ConfigError when it is not
    one."""
    if len(entry) != 3:
        raise ConfigError("select_frames takes (sequence id, scan numbers, poses) per sequence, got an entry of "
                          f"{len(entry)} items")
    seq, scans, poses = entry
    scans = np.asarray(scans, np.int64).reshape(-1)
    if len(scans) != len(poses):
        raise ConfigError(f"sequence {seq}: {len(scans)} scan numbers for {len(poses)} poses")
    if len(scans) and (scans[0] < 0 or (np.diff(scans) <= 0).any()):
        raise ConfigError(f"sequence {seq}: scan numbers must be >= 0 and increasing, got {scans.tolist()[:8]}")
    return int(seq), scans, poses


def _spread(motion: np.ndarray, k: int) -> np.ndarray:
    """Sorted indices of k distinct frames whose motion is nearest the targets (j + 0.5) / k of the axis from
    motion[0] to motion[-1] (see the module doc)."""
    start, total = motion[0], motion[-1] - motion[0]
    targets = start + (np.arange(k) + 0.5) / k * total
    taken = np.zeros(len(motion), bool)
    chosen = []
    for target in targets:
        order = np.argsort(np.abs(motion - target), kind="stable")  # nearest first, earlier frame on ties
        j = order[np.argmax(~taken[order])]
        taken[j] = True
        chosen.append(j)
    return np.sort(np.asarray(chosen, np.int64))
