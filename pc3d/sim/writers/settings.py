"""The one settings object every writer of pc3d.sim.writers takes."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..sensor import LidarSpec


@dataclass(frozen=True)
class WriterSettings:
    """What to simulate and where to write it.

    out: the output root. frames: frames to write (ScanNet: scenes; scene flow: pairs). seed: the
    run's seed (same settings, byte-identical files). spec: the LiDAR (outdoor formats).
    sequence_length: frames per scene / sequence / segment (outdoor formats). density: scales the
    number of road users; moving_density adds moving cars, cyclists and pedestrians near the ego's path
    (pc3d.sim.outdoor.make_outdoor_scene); stops / standing: red lights per sequence and the share of its
    time the ego stands at them, zones: fences, trees and poles on one stretch per side of the road only
    (SemanticKITTI layout; make_outdoor_scene); groups: pedestrians walking in groups (make_outdoor_scene).
    Every outdoor writer passes these scene options (`scene()`) on. scan_interval: seconds between the scans
    a SemanticKITTI sequence keeps (0.1: every sweep of a 10 Hz sensor; 1.0: one scan a second, so a
    sequence of 40 scans drives through 40 s of street, not 4). distortion: ego-motion distortion of the raw
    sweeps (the KITTI object format; SemanticKITTI's odometry scans are motion-compensated). progress:
    called with the number of frames done.
    """

    out: Path
    frames: int
    seed: int
    spec: LidarSpec
    sequence_length: int = 1
    density: float = 1.0
    moving_density: float = 0.0
    stops: int = 0
    standing: float = 0.5
    zones: bool = False
    groups: float = 0.0
    scan_interval: float = 0.1
    distortion: bool = False
    progress: Callable[[int], None] | None = field(default=None, compare=False)

    def scene(self) -> dict:
        """The scene options, as keywords of pc3d.sim.frames.outdoor_frames (and make_outdoor_scene)."""
        return {"density": self.density, "moving_density": self.moving_density, "stops": self.stops,
                "standing": self.standing, "zones": self.zones, "groups": self.groups}

    def tick(self, done: int) -> None:
        """Report `done` frames written to the progress callback, if any."""
        if self.progress is not None:
            self.progress(done)
