"""Spinning multi-beam LiDARs: presets, and one sweep of the world into a range image.

Range-image conventions follow Waymo's official range_image_utils (and pc3d.geometry.range_image):
row 0 is the highest beam; column j looks along azimuth ((W - j - 0.5) / W * 2 - 1) * pi in the
vehicle frame (minus the mount's yaw in the sensor frame), i.e. from about +pi (behind), turning
clockwise seen from above. A sweep's points come in that order, row by row (firing order);
`velodyne_file_order` turns it into the order of KITTI's velodyne files.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .world import World


@dataclass(frozen=True)
class LidarSpec:
    """A rotating LiDAR.

    inclinations: float64 [H] beam elevations in radians, row 0 the highest. columns: W firings per
    turn. mount: [4, 4] sensor -> vehicle (vehicle frame: origin on the ground under the sensor for
    KITTI-like rigs, Waymo's rear-axle frame for the Waymo preset). noise: range sigma (m).
    dropout: chance a return is lost. Reflectance is reported in [0, 1].
    """

    name: str
    inclinations: np.ndarray
    columns: int
    max_range: float
    min_range: float
    mount: np.ndarray
    noise: float = 0.02
    dropout: float = 0.03
    period: float = 0.1
    extra: dict = field(default_factory=dict)

    @property
    def beams(self) -> int:
        return len(self.inclinations)

    def azimuths(self) -> np.ndarray:
        """float64 [W] sensor-frame azimuth of each column (Waymo convention, +pi -> -pi in the vehicle
        frame, minus the mount's yaw)."""
        j = np.arange(self.columns, dtype=np.float64)
        yaw = np.arctan2(self.mount[1, 0], self.mount[0, 0])
        return ((self.columns - j - 0.5) / self.columns * 2.0 - 1.0) * np.pi - yaw

    def with_columns(self, columns: int) -> LidarSpec:
        return replace(self, columns=int(columns))


def _mount(height: float, x: float = 0.0, yaw: float = 0.0) -> np.ndarray:
    m = np.eye(4)
    c, s = np.cos(yaw), np.sin(yaw)
    m[:2, :2] = [[c, -s], [s, c]]
    m[:3, 3] = (x, 0.0, height)
    return m


def _hdl64e_inclinations() -> np.ndarray:
    # HDL-64E: upper block of 32 lasers +2 .. -8.33 deg, lower block -8.83 .. -24.8 deg (denser above)
    upper = np.linspace(2.0, -8.33, 32)
    lower = np.linspace(-8.83, -24.8, 32)
    return np.deg2rad(np.concatenate([upper, lower]))


def kitti_hdl64e(columns: int = 2048) -> LidarSpec:
    """KITTI's Velodyne HDL-64E: 64 beams +2 .. -24.8 deg, 1.73 m above the ground, 120 m.

    2,048 columns (0.176 deg) give KITTI's ~120k points per sweep, the width range-image methods
    (RangeNet++, SqueezeSeg) use for KITTI; the firmware's 0.08 deg would give twice the density
    of the released scans.
    """
    return LidarSpec("kitti_hdl64e", _hdl64e_inclinations(), columns, 120.0, 2.5, _mount(1.73), noise=0.02,
                     dropout=0.03)


def waymo_top(columns: int = 2650) -> LidarSpec:
    """Waymo's top LiDAR: 64 beams +2.4 .. -17.6 deg (denser near the horizon), 75 m, 2,650 columns.

    Mounted at Waymo's typical TOP extrinsic (1.43 m ahead of the rear axle, 2.184 m up) with a
    small yaw so readers must apply the azimuth correction.
    """
    t = np.linspace(0.0, 1.0, 64)
    incl = 2.4 - 20.0 * (0.55 * t + 0.45 * t**2)
    return LidarSpec("waymo_top", np.deg2rad(incl), columns, 75.0, 0.5, _mount(2.184, 1.43, 0.0087),
                     noise=0.015, dropout=0.02)


def lidar_32(columns: int = 1800) -> LidarSpec:
    """A 32-beam LiDAR (HDL-32E-like): +10.67 .. -30.67 deg uniform, 1.8 m up, 100 m."""
    return LidarSpec("lidar_32", np.deg2rad(np.linspace(10.67, -30.67, 32)), columns, 100.0, 1.0, _mount(1.8),
                     noise=0.03, dropout=0.03)


PRESETS = {"kitti": kitti_hdl64e, "kitti_hdl64e": kitti_hdl64e, "waymo": waymo_top, "waymo_top": waymo_top,
           "lidar_32": lidar_32}


DARK = 0.06


@dataclass
class Sweep:
    """One sweep as a range image [H, W] (row 0 the highest beam) plus the valid returns.

    range float32 [H, W] (0 where no return), primitive int32 [H, W] (-1), intensity float32 [H, W];
    points float32 [N, 4] (x, y, z, reflectance in the sensor frame at each firing), pixel int64 [N]
    (row * W + col of each point), primitive int32 [N], world float64 [N, 3] (hit points, world frame).
    """

    range_image: np.ndarray
    primitive_image: np.ndarray
    intensity_image: np.ndarray
    points: np.ndarray
    pixel: np.ndarray
    primitive: np.ndarray
    world: np.ndarray


def intensity_model(reflectivity: np.ndarray, cos_incidence: np.ndarray, rng_m: np.ndarray) -> np.ndarray:
    """Reported reflectance of returns: partly Lambertian in the incidence angle, fading with range."""
    lambert = 0.5 + 0.5 * np.clip(cos_incidence, 0.0, 1.0)
    return reflectivity * lambert * np.exp(-rng_m / 150.0)


def sweep(world: World, spec: LidarSpec, sensor_pose: np.ndarray, rng: np.random.Generator,
          sensor_pose_end: np.ndarray | None = None) -> Sweep:
    """Cast one sweep of `spec` from sensor_pose ([4, 4] sensor -> world at the first firing).

    With sensor_pose_end (the pose at the last firing) each column fires from its own interpolated
    pose and reports its points in that instantaneous frame: the ego-motion distortion of raw scans.
    Range noise (Gaussian), random dropouts and dark far returns are drawn from rng.
    """
    h, w = spec.beams, spec.columns
    distort = sensor_pose_end is not None
    end = sensor_pose_end if distort else sensor_pose
    dist, prim, cos_inc, hits = world.cast_sweep(sensor_pose, end, spec.inclinations, spec.azimuths(), distort,
                                                 spec.max_range)
    pixel = np.flatnonzero(prim >= 0)
    dist, prim, cos_inc = dist[pixel], prim[pixel], cos_inc[pixel]
    measured = dist + rng.standard_normal(len(pixel)) * spec.noise
    intensity = intensity_model(world.reflectivity[prim], cos_inc, dist)
    # weak returns (dark, grazing or far surfaces) are lost more often
    lost = spec.dropout + np.clip(0.04 - intensity, 0.0, None) * 12.5
    keep = (measured >= spec.min_range) & (measured < spec.max_range) & (rng.random(len(pixel)) >= lost)
    pixel, prim, measured, intensity = pixel[keep], prim[keep], measured[keep], intensity[keep]
    # KITTI reports reflectance in steps of 0.01
    reflectance = np.floor(np.clip(intensity + rng.normal(0.0, 0.02, len(pixel)), 0.0, 1.0) * 100 + 0.5) / 100
    reflectance[reflectance < DARK] = 0.0  # below the detector's floor the HDL-64E reports 0
    pts = np.empty((len(pixel), 4), np.float32)
    pts[:, :3] = np.take(_local_dirs(spec), pixel, axis=0) * measured[:, None]
    pts[:, 3] = reflectance
    range_image = np.zeros(h * w, np.float32)
    range_image[pixel] = measured
    prim_image = np.full(h * w, -1, np.int32)
    prim_image[pixel] = prim
    intensity_image = np.zeros(h * w, np.float32)
    intensity_image[pixel] = reflectance
    return Sweep(range_image.reshape(h, w), prim_image.reshape(h, w), intensity_image.reshape(h, w), pts,
                 pixel.astype(np.int64), prim, np.take(hits, pixel, axis=0))


def velodyne_file_order(sweep: Sweep) -> np.ndarray:
    """int64 [N]: the permutation of a sweep's points (firing order, `Sweep.pixel`) into KITTI's velodyne file
    order, which SemanticKITTI's scans share: ring after ring from the highest beam, each ring counter-clockwise
    seen from above (azimuth increasing) from behind the car, where the seam lies. The real scan in
    ../shared/samples/kitti (training frame 000008) reads so: within every ring of its camera crop the azimuth
    rises from -40 to +39 degrees before the next ring starts. Order matters to readers: hard voxelization keeps
    the first points of a full voxel, and range-image methods find ring starts from the azimuth's jumps."""
    row, col = np.divmod(sweep.pixel, sweep.range_image.shape[1])
    return np.lexsort((-col, row))


_DIRS: dict[tuple, np.ndarray] = {}


def _local_dirs(spec: LidarSpec) -> np.ndarray:
    """float32 [H * W, 3] unit ray directions in the sensor frame, row-major; cached per geometry."""
    key = (spec.inclinations.tobytes(), spec.columns)
    if key not in _DIRS:
        incl = spec.inclinations[:, None]
        az = spec.azimuths()[None, :]
        dirs = np.stack(np.broadcast_arrays(np.cos(az) * np.cos(incl), np.sin(az) * np.cos(incl), np.sin(incl)), -1)
        _DIRS.clear()
        _DIRS[key] = dirs.reshape(-1, 3).astype(np.float32)
    return _DIRS[key]
