"""One entry point: simulate a dataset in the official layout of a real one.

    simulate_dataset("kitti", "data/sim_kitti", frames=200, seed=0)

Every random choice comes from generators seeded by (seed, scene index), and nothing reads the
clock, so the same arguments give byte-identical files.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from pc3d.errors import ConfigError

from .frames import outdoor_frames, scene_rng, sensor_spec
from .writers.kitti import write_kitti
from .writers.modelnet import write_modelnet40
from .writers.scannet import write_scannet
from .writers.sceneflow import write_sceneflow_ft3d, write_sceneflow_kitti
from .writers.semantickitti import write_semantickitti
from .writers.settings import WriterSettings
from .writers.waymo import write_waymo

__all__ = ["FORMATS", "outdoor_frames", "scene_rng", "sensor_spec", "simulate_dataset"]

# the writers of each format ("sceneflow" writes both scene-flow variants)
WRITERS: dict[str, tuple[Callable[[WriterSettings], None], ...]] = {
    "kitti": (write_kitti,), "semantickitti": (write_semantickitti,), "semantickitti_mos": (write_semantickitti,),
    "waymo": (write_waymo,),
    "scannet": (write_scannet,), "sceneflow": (write_sceneflow_kitti, write_sceneflow_ft3d),
    "sceneflow_kitti": (write_sceneflow_kitti,), "sceneflow_ft3d": (write_sceneflow_ft3d,),
    "modelnet40": (write_modelnet40,),
}
FORMATS = tuple(WRITERS)
# the formats written from simulated streets (pc3d.sim.outdoor): the scene options apply to them
STREET_FORMATS = ("kitti", "semantickitti", "semantickitti_mos", "waymo", "sceneflow_kitti")
DEFAULT_SENSOR = {"kitti": "kitti", "semantickitti": "kitti", "semantickitti_mos": "kitti", "waymo": "waymo",
                  "sceneflow_kitti": "kitti"}
# moving road users added near the ego's path (make_outdoor_scene's moving_density): semantickitti_mos is
# the SemanticKITTI layout with them (moving-object segmentation needs moving cars, cyclists, pedestrians)
DEFAULT_MOVING_DENSITY = {"semantickitti_mos": 1.0}
DEFAULT_SEQUENCE_LENGTH = {"kitti": 5, "semantickitti": 100, "semantickitti_mos": 100, "waymo": 50, "sceneflow": 20,
                           "sceneflow_kitti": 20}


def simulate_dataset(format: str, out: str | Path, frames: int = 100, seed: int = 0, *, sensor: str | None = None,
                     columns: int | None = None, sequence_length: int | None = None, density: float = 1.0,
                     moving_density: float | None = None, stops: int = 0, standing: float = 0.5,
                     zones: bool = False, groups: float = 0.0, scan_interval: float = 0.1,
                     distortion: bool = False, progress: Callable[[int], None] | None = None) -> Path:
    """Simulate `frames` frames (ScanNet: scenes; scene flow: pairs; ModelNet40: shapes) in the layout of
    `format` under `out`.

    format: one of FORMATS ("sceneflow" writes both scene-flow variants; "semantickitti_mos" is the
    SemanticKITTI layout with moving_density 1 by default). sensor: a LiDAR preset
    (default: the dataset's own). columns: override the preset's azimuth resolution.
    sequence_length: frames per scene / sequence / segment (default per format). density scales the
    number of road users; moving_density adds moving cars, cyclists and pedestrians near the ego's path
    (default per format: DEFAULT_MOVING_DENSITY, else 0); stops: red lights per sequence of the SemanticKITTI
    layouts, where the ego and the traffic its way stand still for `standing` (0 < standing < 1) of the
    sequence's time in all (ST-RFD's case: frames that repeat); zones keeps fences, trees and poles on one
    stretch per side of each scene's road (classes seen in few places); groups: pedestrians walking in
    groups of 2-5, close together (a Poisson count of mean `groups` per side of each scene's road; the
    street formats); scan_interval: seconds between
    the scans of a SemanticKITTI sequence (0.1, the sensor's rate; larger drives further per sequence);
    distortion turns on ego-motion distortion of the raw sweeps (the KITTI object format only). progress is
    called with the number of frames done after each frame.
    Returns the output root.
    """
    if format not in WRITERS:
        raise ConfigError(f"unknown format {format!r}; choose one of {FORMATS}")
    if frames < 1:
        raise ConfigError(f"frames must be >= 1, got {frames}")
    for name, value in (("columns", columns), ("sequence_length", sequence_length)):
        if value is not None and value < 1:  # 0 would silently mean "the default"
            raise ConfigError(f"{name} must be >= 1 (or null for the preset's), got {value}")
    if moving_density is None:
        moving_density = DEFAULT_MOVING_DENSITY.get(format, 0.0)
    for name, value in (("density", density), ("moving_density", moving_density), ("groups", groups)):
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"{name} must be a finite number >= 0, got {value}")
    if isinstance(stops, bool) or not isinstance(stops, int) or stops < 0:
        raise ConfigError(f"stops must be an integer >= 0, got {stops!r}")
    if stops and not (math.isfinite(standing) and 0 < standing < 1):
        raise ConfigError(f"standing must be a number in (0, 1), got {standing}")
    if not (math.isfinite(scan_interval) and scan_interval > 0):
        raise ConfigError(f"scan_interval must be a number > 0 (seconds), got {scan_interval}")
    if (stops or zones or scan_interval != 0.1) and not format.startswith("semantickitti"):
        raise ConfigError(f"stops / zones / scan_interval: only the SemanticKITTI layouts simulate them, "
                          f"not {format!r}")
    if distortion and format != "kitti":
        raise ConfigError(f"distortion: only the KITTI object format keeps raw, distorted sweeps; {format!r} files "
                          "are motion-compensated (SemanticKITTI: the odometry scans), or hold no time to undo it")
    if (density != 1.0 or moving_density or groups) and format not in STREET_FORMATS:
        raise ConfigError(f"density / moving_density / groups: only the street formats {STREET_FORMATS} simulate "
                          f"road users, not {format!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = sensor_spec(sensor or DEFAULT_SENSOR.get(format, "kitti"), columns)
    settings = WriterSettings(
        out=out, frames=int(frames), seed=int(seed), spec=spec,
        sequence_length=int(sequence_length or DEFAULT_SEQUENCE_LENGTH.get(format, 1)), density=float(density),
        moving_density=float(moving_density), stops=stops, standing=float(standing), zones=bool(zones),
        groups=float(groups),
        scan_interval=float(scan_interval), distortion=bool(distortion), progress=progress)
    for write in WRITERS[format]:
        write(settings)
    return out
