"""Online 3D multi-object tracking by greedy centre matching (CenterPoint's tracker) in a fixed (world) frame.

At each frame (time t) every live track predicts its centre at t from its last centre and velocity; the
detections, highest score first, each take the nearest unclaimed track of their own class whose predicted
centre lies within the class's ``max_distance`` (metres, bird's-eye view); a detection that finds none starts a
new track. With ``max_speed`` (by class, m/s) a second stage follows, pc3d's addition: a track with a single
detection, whose motion is a guess, that the first stage left without one may take a detection also left over,
the nearest of its class within ``max_speed`` times the time since it was seen, around where it was seen (a new
car's first detection says nothing of where it goes; the second stage asks only that it could have got there). A
track that no detection takes coasts on its velocity and is dropped after ``max_age`` frames without one
(CenterPoint: 3). Ids are 0, 1, 2, ... in order of birth, never reused; ``reset()`` starts a new sequence (ids
go on counting, so they stay unique over a run).

A track's velocity (``motion``; without the detector's velocities every mode is "own"):

- "detector": its last detection's (vx, vy), CenterPoint's rule: the detector's velocity carries the association;
- "own": its displacement between its last two detections over the time between them (0 for a track seen once);
- "hybrid": the detector's velocity while the track has one detection, its own displacement from the second on.
  A two-sweep detector sees 0.1 s of motion; a track's own displacement spans the time between its detections.
  On the simulated Waymo world tracked at 2 Hz (one frame in five) with one stage, this kept the detector's gain
  for newborn cars and cyclists (cyclist mismatches 0-2 % against 23-50 % from own motion alone) and own
  motion's for pedestrians (0-0.6 % against 1.3-2.6 % from the detector's); at 10 Hz the rules score within 0.3
  MOTA. The second stage then recovers most of what a new track's unknown motion costs (9-14 vehicle MOTA at
  2 Hz for detectors without learnt vehicle velocities; README, Detection: tracking).
- "either" (the default): "hybrid", and a track seen twice or more also predicts where its last detection's
  velocity puts it; a detection's distance to the track is to the nearer of the two predictions (the gate is
  the union of two discs). Where the detector's velocities are good, a track whose own displacement went wrong
  (a wrong pairing, a turn) is still found; where they are not (a detector that calls moving cars still), its
  own motion finds it. At 2 Hz with two stages it scored at or above both "hybrid" and "detector" for vehicles
  on all seven simulated-world detectors measured (up to 2.6 MOTA above "hybrid"), within 0.3 for pedestrians.

Like CenterPoint, every detection is associated, whatever its score: the tracking metrics choose the score cutoff
(pc3d.eval.waymo_tracking). Boxes must be in one frame for the whole sequence (world, not the moving sensor's):
``pc3d.infer.tracking`` moves each frame's boxes by its pose first.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from pc3d.errors import ConfigError

# metres a detection may lie from its track's predicted centre, by class (lower-case); CenterPoint's nuScenes
# gates are 4 m for cars and 1 m for pedestrians at 2 Hz, where a frame's motion is five times Waymo's 10 Hz
DEFAULT_MAX_DISTANCE = {"vehicle": 4.0, "car": 4.0, "van": 4.0, "truck": 4.0, "bus": 5.5, "pedestrian": 1.0,
                        "cyclist": 2.5, "bicycle": 2.5, "motorcycle": 4.0}

# the second stage's reach: about the fastest each class moves (m/s); 0 turns the stage off for a class
DEFAULT_MAX_SPEED = {"vehicle": 30.0, "car": 30.0, "van": 30.0, "truck": 30.0, "bus": 25.0, "pedestrian": 3.0,
                     "cyclist": 10.0, "bicycle": 10.0, "motorcycle": 30.0}


def _by_label(table: Mapping[str, float], overrides: Mapping[str, float] | None, class_names: Sequence[str],
              what: str, option: str) -> np.ndarray:
    table = {**table, **{k.lower(): float(v) for k, v in (overrides or {}).items()}}
    missing = [c for c in class_names if c.lower() not in table]
    if missing:
        raise ConfigError(f"no tracking {what} for classes {missing}: give one, e.g. {option} {missing[0]}=2.0")
    return np.array([0.0] + [table[c.lower()] for c in class_names])


def max_distances(class_names: Sequence[str], overrides: Mapping[str, float] | None = None) -> np.ndarray:
    """The gate (metres) of each label 1..K (index 0 unused) from DEFAULT_MAX_DISTANCE and `overrides` (by class
    name, any case); a class in neither is a ConfigError naming it."""
    return _by_label(DEFAULT_MAX_DISTANCE, overrides, class_names, "gate (metres)", "--track-distance")


def max_speeds(class_names: Sequence[str], overrides: Mapping[str, float] | None = None) -> np.ndarray:
    """The second stage's speed (m/s) of each label 1..K (index 0 unused) from DEFAULT_MAX_SPEED and `overrides`;
    a class in neither is a ConfigError naming it."""
    return _by_label(DEFAULT_MAX_SPEED, overrides, class_names, "speed (m/s)", "--track-max-speed")


def parse_gates(items: Sequence[str], option: str = "--track-distance", zero: bool = False) -> dict[str, float]:
    """{class: value} of command-line items "CLASS=VALUE" (VALUE > 0, or >= 0 with `zero`); a malformed one is a
    ConfigError naming `option` and the item."""
    gates = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            gates[name] = float(value)
        except ValueError:
            gates[name] = float("nan")
        if not (gates[name] >= 0 if zero else gates[name] > 0):
            raise ConfigError(f"{option} {item!r}: expected CLASS=VALUE with VALUE {'>=' if zero else '>'} 0, "
                              "e.g. Pedestrian=1.5")
    return gates


MOTIONS = ("detector", "own", "hybrid", "either")


class GreedyTracker:
    """update(centres [K, 2], labels [K] (1..), scores [K], time (s), velocities [K, 2] or None) -> ids [K].

    max_distance: the gate by label, [num_classes + 1] (max_distances builds it); max_age: frames a track may
    go without a detection before it is dropped; motion: how a track's velocity is estimated (MOTIONS);
    max_speed: the second stage's speed by label, [num_classes + 1] (max_speeds builds it), None for no second
    stage (CenterPoint's tracker)."""

    def __init__(self, max_distance: Sequence[float], max_age: int = 3, motion: str = "either",
                 max_speed: Sequence[float] | None = None):
        self.max_distance = np.asarray(max_distance, np.float64)
        self.max_speed = None if max_speed is None else np.asarray(max_speed, np.float64)
        if self.max_speed is not None and self.max_speed.shape != self.max_distance.shape:
            raise ConfigError(f"max_speed has {self.max_speed.shape[0]} entries, max_distance "
                              f"{self.max_distance.shape[0]} (one per label, index 0 unused)")
        if max_age < 0:
            raise ConfigError(f"max_age must be >= 0, got {max_age}")
        if motion not in MOTIONS:
            raise ConfigError(f"tracking motion {motion!r}: expected one of {MOTIONS}")
        self.max_age, self.motion = int(max_age), motion
        self.next_id = 0
        self.reset()

    def reset(self) -> None:
        """Forget every track: the next update starts a new sequence."""
        self.ids = np.zeros(0, np.int64)
        self.labels = np.zeros(0, np.int64)
        self.centres = np.zeros((0, 2))   # at the track's last detection
        self.velocity = np.zeros((0, 2))  # what the track coasts on (by `motion`)
        self.detected = np.zeros((0, 2))  # its last detection's velocity ("either"'s second prediction)
        self.seen = np.zeros(0)            # time of the last detection
        self.missed = np.zeros(0, np.int64)
        self.hits = np.zeros(0, np.int64)  # detections so far
        self.time: float | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def describe(self, velocities: bool) -> str:
        """Where the velocities come from, given whether the detector provides them."""
        if not velocities or self.motion == "own":
            return "the tracks' own motion"
        return {"detector": "the detector's velocities",
                "hybrid": "the detector's velocities for new tracks, then their own motion",
                "either": "the detector's velocities for new tracks, then their own motion or the detector's, "
                          "whichever is nearer"}[self.motion]

    def update(self, centres: np.ndarray, labels: np.ndarray, scores: np.ndarray, time: float,
               velocities: np.ndarray | None = None) -> np.ndarray:
        centres = np.asarray(centres, np.float64).reshape(-1, 2)
        labels = np.asarray(labels, np.int64).reshape(-1)
        scores = np.asarray(scores, np.float64).reshape(-1)
        if not len(centres) == len(labels) == len(scores):
            raise ValueError(f"{len(centres)} centres, {len(labels)} labels and {len(scores)} scores")
        if labels.size and (labels.min() < 1 or labels.max() >= len(self.max_distance)):
            raise ValueError(f"labels must be in [1, {len(self.max_distance) - 1}], got [{labels.min()}, "
                             f"{labels.max()}]")
        if self.time is not None and time <= self.time:
            raise ValueError(f"frame time {time} s does not come after the last one ({self.time} s)")
        self.time = float(time)
        detector = (None if velocities is None or self.motion == "own" else
                    np.nan_to_num(np.asarray(velocities, np.float64).reshape(-1, 2)))
        elapsed = (time - self.seen)[:, None]
        to_predicted = _distances(centres, self.centres + self.velocity * elapsed)  # [K, T]
        if self.motion == "either" and detector is not None:
            to_predicted = np.minimum(to_predicted, _distances(centres, self.centres + self.detected * elapsed))
        track_of = np.full(len(centres), -1, np.int64)
        free = np.ones(len(self.ids), bool)
        order = np.argsort(-scores, kind="stable")
        self._assign(order, track_of, free, labels, to_predicted, self.max_distance[labels][:, None])
        if self.max_speed is not None:  # second stage: a track seen once may have gone anywhere it could reach
            young = free & (self.hits == 1) & (self.max_speed[self.labels] > 0)
            reach = self.max_speed[self.labels] * (time - self.seen)
            to_last = _distances(centres, self.centres)
            self._assign(order[track_of[order] < 0], track_of, young, labels, to_last, reach[None])
            free[track_of[track_of >= 0]] = False
        # matched tracks take their detection; the others coast, and go after max_age frames without one
        matched = track_of >= 0
        t = track_of[matched]
        if detector is not None and self.motion == "detector":
            self.velocity[t] = detector[matched]
        else:
            self.velocity[t] = (centres[matched] - self.centres[t]) / (time - self.seen[t])[:, None]
        if detector is not None:
            self.detected[t] = detector[matched]
        self.centres[t], self.seen[t], self.missed[t] = centres[matched], time, 0
        self.hits[t] += 1
        self.missed[free] += 1
        ids = np.full(len(centres), -1, np.int64)
        ids[matched] = self.ids[t]
        born = np.flatnonzero(~matched)
        ids[born] = self.next_id + np.arange(len(born))
        self.next_id += len(born)
        new_velocity = np.zeros((len(born), 2)) if detector is None else detector[born]
        keep = self.missed <= self.max_age
        self.ids = np.concatenate([self.ids[keep], ids[born]])
        self.labels = np.concatenate([self.labels[keep], labels[born]])
        self.centres = np.concatenate([self.centres[keep], centres[born]])
        self.velocity = np.concatenate([self.velocity[keep], new_velocity])
        self.detected = np.concatenate([self.detected[keep], new_velocity])
        self.seen = np.concatenate([self.seen[keep], np.full(len(born), float(time))])
        self.missed = np.concatenate([self.missed[keep], np.zeros(len(born), np.int64)])
        self.hits = np.concatenate([self.hits[keep], np.ones(len(born), np.int64)])
        return ids

    def _assign(self, order: np.ndarray, track_of: np.ndarray, free: np.ndarray, labels: np.ndarray,
                dist: np.ndarray, gate: np.ndarray) -> None:
        """Greedy: each detection of `order` takes the nearest free track of its class with dist [K, T] <= gate
        (broadcast to [K, T]); track_of and free are updated in place."""
        gate = np.broadcast_to(gate, dist.shape)
        for i in order:
            d = np.where(free & (self.labels == labels[i]) & (dist[i] <= gate[i]), dist[i], np.inf)
            if len(d) and np.isfinite(d.min()):
                track_of[i] = int(np.argmin(d))
                free[track_of[i]] = False


def _distances(centres: np.ndarray, points: np.ndarray) -> np.ndarray:
    """[K, T] bird's-eye distances between centres [K, 2] and points [T, 2]."""
    return np.hypot(*(points[None] - centres[:, None]).transpose(2, 0, 1))
