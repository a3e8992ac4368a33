"""Seeded streams of simulated outdoor frames, shared by the writers and the on-the-fly datasets.

Every random choice comes from generators seeded by (seed, scene index), and nothing reads the
clock, so the same arguments give the same frames.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from pc3d.errors import ConfigError

from .outdoor import OutdoorScene, make_outdoor_scene
from .sensor import PRESETS, LidarSpec
from .simulator import SimFrame, simulate_sequence


def scene_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """The generator of scene `index` of a run with `seed` (stream 0: layout, 1: sensor noise)."""
    return np.random.default_rng([int(seed), int(index), int(stream)])


def sensor_spec(name: str, columns: int | None = None) -> LidarSpec:
    """The LiDAR preset `name` (pc3d.sim.sensor.PRESETS), with `columns` azimuth steps when given."""
    if name not in PRESETS:
        raise ConfigError(f"unknown LiDAR preset {name!r}; choose one of {sorted(PRESETS)}")
    spec = PRESETS[name]()
    return spec.with_columns(columns) if columns else spec


def outdoor_frames(frames: int, seed: int, spec: LidarSpec, *, frames_per_scene: int, spacing: float = 0.1,
                   flow: bool = False, distortion: bool = False,
                   density: float = 1.0, moving_density: float = 0.0, stops: int = 0,
                   standing: float = 0.5, zones: bool = False,
                   groups: float = 0.0) -> Iterator[tuple[int, OutdoorScene, SimFrame]]:
    """(scene index, scene, frame) for `frames` frames: a new scene every frames_per_scene frames,
    frames `spacing` seconds apart inside a scene. density / moving_density / stops / standing / zones /
    groups: see make_outdoor_scene."""
    scene_index = 0
    done = 0
    while done < frames:
        n = min(frames_per_scene, frames - done)
        scene = make_outdoor_scene(scene_rng(seed, scene_index), duration=(n - 1) * spacing + 0.2, density=density,
                                   moving_density=moving_density, stops=stops, standing=standing, zones=zones,
                                   groups=groups)
        noise = scene_rng(seed, scene_index, 1)
        for frame in simulate_sequence(scene, spec, n, noise, dt=spacing, flow=flow, distortion=distortion):
            yield scene_index, scene, frame
        done += n
        scene_index += 1
