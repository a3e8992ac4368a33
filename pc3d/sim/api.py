"""One entry point: simulate a dataset in the official layout of a real one.

    simulate_dataset("kitti", "data/sim_kitti", frames=200, seed=0)

Every random choice comes from generators seeded by (seed, scene index), and nothing reads the
clock, so the same arguments give byte-identical files.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from pc3d.errors import ConfigError

from .outdoor import OutdoorScene, make_outdoor_scene
from .sensor import PRESETS, LidarSpec
from .simulator import SimFrame, simulate_sequence

FORMATS = ("kitti", "semantickitti", "waymo", "scannet", "sceneflow", "sceneflow_kitti", "sceneflow_ft3d")
DEFAULT_SENSOR = {"kitti": "kitti", "semantickitti": "kitti", "waymo": "waymo", "sceneflow_kitti": "kitti"}


def scene_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """The generator of scene `index` of a run with `seed` (stream 0: layout, 1: sensor noise)."""
    return np.random.default_rng([int(seed), int(index), int(stream)])


def sensor_spec(name: str, columns: int | None = None) -> LidarSpec:
    if name not in PRESETS:
        raise ConfigError(f"unknown LiDAR preset {name!r}; choose one of {sorted(PRESETS)}")
    spec = PRESETS[name]()
    return spec.with_columns(columns) if columns else spec


def outdoor_frames(frames: int, seed: int, spec: LidarSpec, *, frames_per_scene: int, spacing: float = 0.1,
                   flow: bool = False, distortion: bool = False,
                   density: float = 1.0) -> Iterator[tuple[int, OutdoorScene, SimFrame]]:
    """(scene index, scene, frame) for `frames` frames: a new scene every frames_per_scene frames,
    frames `spacing` seconds apart inside a scene."""
    scene_index = 0
    done = 0
    while done < frames:
        n = min(frames_per_scene, frames - done)
        scene = make_outdoor_scene(scene_rng(seed, scene_index), duration=(n - 1) * spacing + 0.2, density=density)
        noise = scene_rng(seed, scene_index, 1)
        for frame in simulate_sequence(scene, spec, n, noise, dt=spacing, flow=flow, distortion=distortion):
            yield scene_index, scene, frame
        done += n
        scene_index += 1


def simulate_dataset(format: str, out: str | Path, frames: int = 100, seed: int = 0, *, sensor: str | None = None,
                     columns: int | None = None, sequence_length: int | None = None, density: float = 1.0,
                     distortion: bool = False, progress: Callable[[int], None] | None = None) -> Path:
    """Simulate `frames` frames (ScanNet: scenes; scene flow: pairs) in the layout of `format` under `out`.

    format: one of FORMATS ("sceneflow" writes both scene-flow variants). sensor: a LiDAR preset
    (default: the dataset's own). columns: override the preset's azimuth resolution.
    sequence_length: frames per scene / sequence / segment (default per format). density scales the
    number of road users; distortion turns on ego-motion distortion of the raw sweeps. progress is
    called with the number of frames done after each frame. Returns the output root.
    """
    if format not in FORMATS:
        raise ConfigError(f"unknown format {format!r}; choose one of {FORMATS}")
    if frames < 1:
        raise ConfigError(f"frames must be >= 1, got {frames}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tick = progress or (lambda n: None)
    spec = sensor_spec(sensor or DEFAULT_SENSOR.get(format, "kitti"), columns)
    if format == "kitti":
        _kitti(out, frames, seed, spec, sequence_length or 5, density, distortion, tick)
    elif format == "semantickitti":
        from .writers.semantickitti import write_semantickitti

        write_semantickitti(out, frames, seed, spec, sequence_length or 100, density, distortion, tick)
    elif format == "waymo":
        from .writers.waymo import write_waymo

        write_waymo(out, frames, seed, spec, sequence_length or 50, density, tick)
    elif format == "scannet":
        from .writers.scannet import write_scannet

        write_scannet(out, frames, seed, tick)
    else:
        from .writers.sceneflow import write_sceneflow_ft3d, write_sceneflow_kitti

        if format in ("sceneflow", "sceneflow_kitti"):
            write_sceneflow_kitti(out, frames, seed, spec, sequence_length or 20, density, tick)
        if format in ("sceneflow", "sceneflow_ft3d"):
            write_sceneflow_ft3d(out, frames, seed, tick)
    return out


def _kitti(out, frames, seed, spec, frames_per_scene, density, distortion, tick) -> None:
    from .ground_truth import kitti_calib
    from .writers.kitti import KittiWriter

    writer = KittiWriter(out, kitti_calib())
    ground_z = -float(spec.mount[2, 3])
    # KITTI object frames are snapshots: frames of one scene are a second apart
    for n, (_, _, frame) in enumerate(outdoor_frames(frames, seed, spec, frames_per_scene=frames_per_scene,
                                                     spacing=1.0, distortion=distortion, density=density)):
        writer.write(frame, ground_z)
        tick(n + 1)
    writer.close()
