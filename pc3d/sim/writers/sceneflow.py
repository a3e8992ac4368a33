"""Scene-flow layouts of HPLFlowNet's preprocessing: one folder per sample with pc1.npy and pc2.npy
(float32 N x 3, same index = same point, flow = pc2 - pc1), only points visible in both frames.

    KITTI_processed_occ_final/NNNNNN/{pc1,pc2}.npy
        camera frame with x left, y up, z forward (HPLFlowNet's kitti_utils negates x and y of the
        rectified camera); camera field of view only, ground (y < -1.4 in both clouds) and depth
        >= 35 m removed, as the loaders expect.
        Every pair holds at least one point (SceneFlowDataset refuses an empty one): a sensor with no column
        in the camera's view is a ConfigError before anything is written, and a pair that ends up empty all
        the same (a few columns, nothing near in view) stops the run with a ConfigError naming it, never a
        pair left out or written empty.
    calib_cam_to_cam/NNNNNN.txt
        the pair's rectified cameras as KITTI scene flow's training/calib_cam_to_cam files give them
        (S_rect_0i, R_rect_00, P_rect_0i; the world's one calibration), for the 2D metrics
        (SceneFlowDataset calib_dir).
    FlyingThings3D_subset_processed_35m/{train,val}/NNNNNNN/{pc1,pc2}.npy
        x right, y up, z = -depth (HPLFlowNet's loader negates x and z); points nearer than 35 m.
        Random primitives fly in front of a moving camera and a cluttered static background, as in
        FlyingThings3D.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pc3d.errors import ConfigError
from pc3d.geometry.calib import KittiCalib

from ..frames import outdoor_frames
from ..ground_truth import IMAGE_SHAPE, in_camera_fov, kitti_calib
from ..primitives import Parts, box, cylinder, ellipsoid
from ..sensor import PRESETS, LidarSpec
from ..world import World
from .settings import WriterSettings

KITTI_DIR = "KITTI_processed_occ_final"
FT3D_DIR = "FlyingThings3D_subset_processed_35m"


def _save(folder: Path, pc1: np.ndarray, pc2: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "pc1.npy", np.ascontiguousarray(pc1, dtype="<f4"))
    np.save(folder / "pc2.npy", np.ascontiguousarray(pc2, dtype="<f4"))


def _visible(world: World, origin: np.ndarray, targets: np.ndarray, tolerance: float = 0.1) -> np.ndarray:
    """bool [N]: no surface of world lies between origin and each target (beyond the tolerance)."""
    d = targets - origin
    dist = np.linalg.norm(d, axis=1)
    rng, _, _ = world.cast(np.broadcast_to(origin, d.shape), d / np.maximum(dist, 1e-9)[:, None], 1e4)
    return rng > dist - tolerance


def cam_to_cam_text(calib: KittiCalib, image_shape: tuple[int, int] = IMAGE_SHAPE) -> str:
    """A calib_cam_to_cam file's rectified lines ("KEY: v ..."; '%e' values as KITTI writes them): S_rect_0i
    (width, height), R_rect_00 and P_rect_0i of the four cameras."""
    def line(key: str, values) -> str:
        return f"{key}: " + " ".join(f"{v:.6e}" for v in np.ravel(values)) + "\n"

    size = (image_shape[1], image_shape[0])
    lines = [line("R_rect_00", calib.R0_rect)]
    for i in range(4):
        lines += [line(f"S_rect_0{i}", size), line(f"P_rect_0{i}", getattr(calib, f"P{i}"))]
    return "".join(lines)


def columns_in_view(spec: LidarSpec, calib: KittiCalib) -> int:
    """How many of the sensor's azimuth columns see into the camera's image (any beam, 3 to 34 m out)."""
    az, incl = spec.azimuths(), spec.inclinations[:, None]
    rays = np.stack(np.broadcast_arrays(np.cos(incl) * np.cos(az), np.cos(incl) * np.sin(az), np.sin(incl)), -1)
    points = np.concatenate([r * rays.reshape(-1, 3) for r in (3.0, 10.0, 34.0)])
    return int(in_camera_fov(points, calib).reshape(3, -1, len(az)).any(axis=(0, 1)).sum())


def _columns_hint(spec: LidarSpec) -> str:
    preset = PRESETS[spec.name]().columns if spec.name in PRESETS else None
    return "simulate with more columns" + (f" (the {spec.name} preset has {preset})" if preset else "")


def write_sceneflow_kitti(settings: WriterSettings) -> None:
    """settings.frames pairs under settings.out/KITTI_DIR, a new scene every sequence_length pairs, and their
    calib_cam_to_cam files. ConfigError for a sensor that would leave a pair empty (the module doc)."""
    calib = kitti_calib()
    spec = settings.spec
    in_view = columns_in_view(spec, calib)
    if in_view == 0:
        raise ConfigError(f"sceneflow_kitti: columns={spec.columns}: no column of the {spec.name} sensor looks into "
                          f"the camera's field of view, so every pair would be empty; {_columns_hint(spec)}")
    root = Path(settings.out) / KITTI_DIR
    calib_dir = Path(settings.out) / "calib_cam_to_cam"
    calib_dir.mkdir(parents=True, exist_ok=True)
    calib_text = cam_to_cam_text(calib)
    frames = outdoor_frames(settings.frames, settings.seed, spec, frames_per_scene=settings.sequence_length,
                            flow=True, **settings.scene())
    for n, (_, scene, frame) in enumerate(frames):
        pc1 = frame.points[:, :3].astype(np.float64)
        pc2 = pc1 + frame.flow
        # occluded at t + dt: something else lies in front of the moved point
        next_world = scene.world(frame.time + 0.1)
        next_sensor = scene.vehicle_pose(frame.time + 0.1) @ spec.mount
        moved_road = pc2 @ next_sensor[:3, :3].T + next_sensor[:3, 3]
        keep = in_camera_fov(pc1, calib) & in_camera_fov(pc2, calib)
        keep &= _visible(next_world, next_sensor[:3, 3], moved_road)
        # filtered on the float32 values the files hold, as SceneFlowDataset filters them: it drops nothing more
        c1 = (np.asarray(calib.lidar_to_rect(pc1[keep]), np.float64) * (-1.0, -1.0, 1.0)).astype(np.float32)
        c2 = (np.asarray(calib.lidar_to_rect(pc2[keep]), np.float64) * (-1.0, -1.0, 1.0)).astype(np.float32)
        ground = (c1[:, 1] < -1.4) & (c2[:, 1] < -1.4)
        near = (c1[:, 2] < 35.0) & (c2[:, 2] < 35.0)
        p1, p2 = c1[~ground & near], c2[~ground & near]
        if not len(p1):  # SceneFlowDataset refuses a pair with nothing left
            before = "no pair is" if n == 0 else "pair 000000 is" if n == 1 else f"pairs 000000-{n - 1:06d} are"
            raise ConfigError(f"{root / f'{n:06d}'}: no point of this pair is left in the camera's view (ground, depth "
                              f">= 35 m and occluded points removed) with columns={spec.columns} of the {spec.name} "
                              f"sensor ({in_view} in the camera's field of view), and SceneFlowDataset refuses an "
                              f"empty pair; {before} written; {_columns_hint(spec)}")
        _save(root / f"{n:06d}", p1, p2)
        (calib_dir / f"{n:06d}.txt").write_text(calib_text)
        settings.tick(n + 1)


def _random_rotation(rng: np.random.Generator, max_angle: float) -> np.ndarray:
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    angle = rng.uniform(-max_angle, max_angle)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _random_primitive(rng: np.random.Generator, centre: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """A box, capped cylinder or ellipsoid about centre, randomly turned, of extent drawn from scale (m)."""
    lo, hi = scale
    rotation = _random_rotation(rng, np.pi)
    kind = rng.integers(0, 3)
    if kind == 0:
        return box(centre, rng.uniform(lo, hi, 3), rotation)
    if kind == 1:
        return cylinder(centre, rng.uniform(lo, hi) / 2.5, rng.uniform(lo, hi), rotation)
    return ellipsoid(centre, rng.uniform(lo, hi, 3) / 2, rotation)


def flying_things_scene(rng: np.random.Generator, width: int = 320, height: int = 180, objects: int = 16,
                        clutter: int = 80) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pc1, pc2, owner): float64 [N, 3] points in the camera frames (x right, y down, z forward) of t and
    t + 1, each inside that frame's image and pc2 not occluded, and int [N] the item each point lies on: 0 the
    backdrop wall, 1..clutter the static clutter in front of it, the rest the flying objects.

    Static scenery is a wall 30-40 m away with `clutter` primitives (1-6 m) between 14 and 34 m, so that
    geometry shows the camera's motion almost everywhere, as FlyingThings3D's cluttered backgrounds do: a
    bare wall hides the in-plane part of that motion (no method can see a plane slide along itself).
    `objects` primitives (0.3-3 m) at 4-28 m each turn (up to 8 deg) and move (0.3 m std per axis); the
    camera turns up to 3 deg and moves 0.3 m std per axis.
    """
    items = [(box((0.0, 0.0, rng.uniform(30, 40)), (120.0, 80.0, 1.0)), 0, 0.5)]
    for _ in range(clutter):
        centre = np.array([rng.uniform(-16, 16), rng.uniform(-9, 9), rng.uniform(14, 34)])
        items.append((_random_primitive(rng, centre, (1.0, 6.0)), 0, 0.5))
    motions = [(np.eye(3), np.zeros(3))] * len(items)
    for _ in range(objects):
        centre = np.array([rng.uniform(-8, 8), rng.uniform(-5, 5), rng.uniform(4, 28)])
        items.append((_random_primitive(rng, centre, (0.3, 3.0)), 0, 0.5))
        motions.append((_random_rotation(rng, np.deg2rad(8)), rng.normal(0, 0.3, 3)))
    parts = Parts.build(items)
    owner = np.arange(len(parts), dtype=np.int32)
    world0 = World(parts.rows, parts.semantic, parts.reflectivity, owner)
    f = 1050.0 * width / 960.0
    u, v = np.meshgrid(np.arange(width) + 0.5 - width / 2, np.arange(height) + 0.5 - height / 2)
    dirs = np.stack([u.ravel() / f, v.ravel() / f, np.ones(u.size)], 1)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    rng_m, prim, _ = world0.cast(np.zeros_like(dirs), dirs, 1e4)
    hit = prim >= 0
    pc1 = dirs[hit] * rng_m[hit, None]
    rot = np.stack([m[0] for m in motions])
    trans = np.stack([m[1] for m in motions])
    rows1 = parts.rows.copy()
    for i, (r, t) in enumerate(motions):  # each object turns about its own centre and moves
        rows1[i, 1:4] = parts.rows[i, 1:4] + t
        rows1[i, 4:13] = (r @ parts.rows[i, 4:13].reshape(3, 3)).ravel()
    o = prim[hit]
    moved = np.einsum("nij,nj->ni", rot[o], pc1 - parts.rows[o, 1:4]) + parts.rows[o, 1:4] + trans[o]
    cam_r, cam_t = _random_rotation(rng, np.deg2rad(3)), rng.normal(0, 0.3, 3)
    world1 = World(rows1, parts.semantic, parts.reflectivity, owner)
    visible = _visible(world1, cam_t, moved)
    pc2 = (moved - cam_t) @ cam_r  # camera at t + 1: x_world = cam_r @ x_cam + cam_t
    with np.errstate(divide="ignore", invalid="ignore"):  # and inside its image (a point can leave the frame)
        visible &= (pc2[:, 2] > 0) & (np.abs(pc2[:, 0] / pc2[:, 2]) * f < width / 2) & (
            np.abs(pc2[:, 1] / pc2[:, 2]) * f < height / 2)
    return pc1[visible], pc2[visible], o[visible]


def write_sceneflow_ft3d(settings: WriterSettings) -> None:
    """settings.frames pairs under settings.out/FT3D_DIR: 80 % train, the rest val."""
    pairs, seed = settings.frames, settings.seed
    root = Path(settings.out) / FT3D_DIR
    n_train = min(pairs - 1, max(1, round(0.8 * pairs))) if pairs > 1 else pairs
    for n in range(pairs):
        rng = np.random.default_rng([int(seed), n, 7])
        pc1, pc2, _ = flying_things_scene(rng)
        # disk frame: x right, y up, z = -depth
        flip = np.array([1.0, -1.0, -1.0])
        pc1, pc2 = (pc1 * flip).astype(np.float32), (pc2 * flip).astype(np.float32)  # filtered as the files hold them
        near = (pc1[:, 2] > -35.0) & (pc2[:, 2] > -35.0)
        split, index = ("train", n) if n < n_train else ("val", n - n_train)
        _save(root / split / f"{index:07d}", pc1[near], pc2[near])
        settings.tick(n + 1)
