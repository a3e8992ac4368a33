"""KITTI calibration: the calib/NNNNNN.txt matrices and the LiDAR <-> rectified camera <-> image maps.

Frames: LiDAR (x forward, y left, z up), reference camera (Tr_velo_to_cam), rectified camera
(R0_rect; x right, y down, z forward) and the left colour image (P2).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from pc3d.errors import DataFormatError

from ._arrays import like, to_numpy

# the devkit's spellings: object calib files use the first, raw-data calib files the second
_ALIASES = {"R0_rect": ("R0_rect", "R_rect"), "Tr_velo_to_cam": ("Tr_velo_to_cam", "Tr_velo_cam"),
            "Tr_imu_to_velo": ("Tr_imu_to_velo", "Tr_imu_velo")}
_SHAPES = {"P0": (3, 4), "P1": (3, 4), "P2": (3, 4), "P3": (3, 4), "R0_rect": (3, 3),
           "Tr_velo_to_cam": (3, 4), "Tr_imu_to_velo": (3, 4)}


def _eye34() -> np.ndarray:
    return np.eye(3, 4)


@dataclass
class KittiCalib:
    """The matrices of one KITTI object calib file, float64.

    P0..P3: [3, 4] projections of the rectified camera frame onto images 0..3 (P2 = left colour).
    R0_rect: [3, 3] reference camera -> rectified camera. Tr_velo_to_cam: [3, 4] LiDAR -> reference
    camera. Tr_imu_to_velo: [3, 4] IMU -> LiDAR (default [I | 0] when built in code).
    """

    P0: np.ndarray
    P1: np.ndarray
    P2: np.ndarray
    P3: np.ndarray
    R0_rect: np.ndarray
    Tr_velo_to_cam: np.ndarray
    Tr_imu_to_velo: np.ndarray = field(default_factory=_eye34)

    def __post_init__(self) -> None:
        for name, shape in _SHAPES.items():
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if value.shape != shape:
                raise DataFormatError(None, f"KittiCalib.{name} must be {shape}, got {value.shape}")
            setattr(self, name, value)

    @classmethod
    def from_file(cls, path: str | PathLike) -> KittiCalib:
        """Read a KITTI calib file ("KEY: v v v ..." lines); raises DataFormatError naming the file."""
        path = Path(path)
        entries = calib_entries(path)
        return cls(**{name: calib_matrix(path, entries, _ALIASES.get(name, (name,)), shape)
                      for name, shape in _SHAPES.items()})

    def to_text(self) -> str:
        """The calib file text as KITTI writes it: one "KEY: v ..." line per matrix, '%.12e' values."""
        return "".join(f"{name}: " + " ".join(f"{v:.12e}" for v in getattr(self, name).ravel()) + "\n"
                       for name in _SHAPES)

    def velo_to_rect(self) -> np.ndarray:
        """4 x 4 LiDAR -> rectified camera, R0_rect @ Tr_velo_to_cam (the odometry calib.txt's Tr)."""
        r0 = np.eye(4)
        r0[:3, :3] = self.R0_rect
        tr = np.eye(4)
        tr[:3] = self.Tr_velo_to_cam
        return r0 @ tr

    def lidar_to_rect(self, points: Any) -> Any:
        """LiDAR points [N, 3(+)] -> rectified camera [N, 3], dtype of the input (float64 maths)."""
        pts = _xyz(points)
        m = self.velo_to_rect()
        out = pts @ m[:3, :3].T + m[:3, 3]
        return like(out.astype(_out_dtype(points)), points)

    def rect_to_lidar(self, points: Any) -> Any:
        """Rectified camera points [N, 3(+)] -> LiDAR [N, 3], dtype of the input."""
        pts = _xyz(points)
        m = np.linalg.inv(self.velo_to_rect())
        out = pts @ m[:3, :3].T + m[:3, 3]
        return like(out.astype(_out_dtype(points)), points)

    def rect_to_image(self, points: Any) -> tuple[Any, Any]:
        """Rectified camera points [N, 3(+)] -> (uv [N, 2] pixels through P2, depth [N] = rect z).

        Points at or behind the camera plane (depth <= 0) get meaningless uv; callers filter on depth.
        """
        pts = _xyz(points)
        hom = pts @ self.P2[:, :3].T + self.P2[:, 3]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = hom[:, :2] / hom[:, 2:3]
        depth = hom[:, 2] - self.P2[2, 3]
        dtype = _out_dtype(points)
        return like(uv.astype(dtype), points), like(depth.astype(dtype), points)

    def lidar_to_image(self, points: Any) -> tuple[Any, Any]:
        """LiDAR points [N, 3(+)] -> (uv [N, 2], depth [N]) in the left colour image (P2)."""
        rect = self.velo_to_rect()
        pts = _xyz(points)
        rect_pts = pts @ rect[:3, :3].T + rect[:3, 3]
        uv, depth = self.rect_to_image(rect_pts)
        dtype = _out_dtype(points)
        return like(uv.astype(dtype), points), like(depth.astype(dtype), points)


def calib_entries(path: Path) -> dict[str, str]:
    """The "KEY: v v v ..." lines of a KITTI calibration file (object, raw-data or scene-flow calib_cam_to_cam)
    as {key: values text}; DataFormatError naming the file when it is missing or not text."""
    if not path.is_file():
        raise DataFormatError(path, "calibration file does not exist")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise DataFormatError(path, "not a text file") from None
    entries: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, values = line.partition(":")
        if sep and key.strip():
            entries[key.strip()] = values
    return entries


def calib_matrix(path: Path, entries: dict[str, str], names: tuple[str, ...], shape: tuple[int, int]) -> np.ndarray:
    """float64 matrix of the first of names found in entries; DataFormatError naming the file when none is there
    or its values are not shape's count of finite numbers."""
    key = next((k for k in names if k in entries), None)
    if key is None:
        raise DataFormatError(path, f"missing key {names[0]!r} (keys found: {sorted(entries)})")
    try:
        values = np.array(entries[key].split(), dtype=np.float64)
    except ValueError as err:
        raise DataFormatError(path, f"{key}: non-numeric value ({err})") from None
    if values.size != shape[0] * shape[1]:
        raise DataFormatError(path, f"{key}: expected {shape[0] * shape[1]} values, got {values.size}")
    if not np.isfinite(values).all():
        raise DataFormatError(path, f"{key}: NaN or infinite value")
    return values.reshape(shape)


def _xyz(points: Any) -> np.ndarray:
    pts = to_numpy(points)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise DataFormatError(None, f"points must be [N, 3+], got shape {tuple(pts.shape)}")
    return pts[:, :3].astype(np.float64)


def _out_dtype(points: Any) -> np.dtype:
    dtype = to_numpy(points).dtype
    return dtype if dtype in (np.float32, np.float64) else np.dtype(np.float64)
