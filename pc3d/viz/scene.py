"""One frame's scene as Open3D geometries: the coloured point cloud, boxes as line sets (12 edges plus
a heading tick from the centre to the front face) and scene flow as arrows (a line set from each point to
where it moves, with a two-stroke head; points and arrows coloured by ``flow_colors``). open3d is imported
inside the functions."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pc3d.geometry import boxes_to_corners
from pc3d.viz.colors import MOS_PALETTE, box_color, flow_colors, point_colors, track_colors

# boxes_to_corners order: bottom face 0-3, top face 4-7 (same winding)
EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4], [0, 4], [1, 5], [2, 6], [3, 7]])


@dataclass
class Scene:
    """What to draw for one frame (LiDAR frame). pred_* come from a detector's prediction dict."""

    points: np.ndarray
    gt_boxes: np.ndarray | None = None
    pred_boxes: np.ndarray | None = None
    pred_scores: np.ndarray | None = None
    pred_labels: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    name: str = ""
    extra: dict = field(default_factory=dict)
    palette: np.ndarray | None = None  # colours of point_labels (colour mode 'class')
    view: str = "driving"  # the offscreen camera: 'driving' (behind the sensor) or 'overview' (fit the points)
    flow: np.ndarray | None = None  # [N, 3] motion of each point (scene flow), drawn as arrows
    track_ids: np.ndarray | None = None  # [K] of the predicted boxes (tools/infer.py --track): colours by track

    def pred_colors(self) -> np.ndarray | None:
        """float32 [K, 3] of the predicted boxes: by track when they have track ids, else by class."""
        if self.pred_boxes is None:
            return None
        if self.track_ids is not None:
            return track_colors(self.track_ids)
        labels = np.ones(len(self.pred_boxes), np.int64) if self.pred_labels is None else self.pred_labels
        return np.array([box_color(int(k)) for k in labels], np.float32).reshape(-1, 3)

    @classmethod
    def from_prediction(cls, points: np.ndarray, prediction: dict | None, gt_boxes: np.ndarray | None = None,
                        name: str = "", palette: np.ndarray | None = None, view: str = "driving") -> Scene:
        """The scene of a model's prediction (the contract's eval-mode keys, pc3d.models.contract) on `points`,
        whatever its task: boxes / scores / labels; pred_labels per point (coloured by `palette`, else a
        generated one); moving per point (MOS_PALETTE: static blue, moving red); flow per point (arrows)."""
        p = prediction or {}
        labels = p.get("pred_labels")
        if labels is None and p.get("moving") is not None:
            labels, palette = np.asarray(p["moving"], np.int64) + 1, MOS_PALETTE
        return cls(points, gt_boxes, p.get("boxes"), p.get("scores"), p.get("labels"), name=name, view=view,
                   point_labels=None if labels is None else np.asarray(labels, np.int64), palette=palette,
                   flow=p.get("flow"), track_ids=p.get("track_ids"))


def box_lines(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices [M * 10, 3] and line index pairs [M * 13, 2]: each box's 8 corners + centre + front centre."""
    boxes = np.asarray(boxes, np.float64)
    boxes = boxes.reshape(-1, boxes.shape[-1] if boxes.size else 7)[:, :7]
    corners = np.asarray(boxes_to_corners(boxes)).reshape(-1, 8, 3)
    centre = boxes[:, None, :3]
    front = centre + 0.5 * boxes[:, None, 3:4] * np.stack([np.cos(boxes[:, 6]), np.sin(boxes[:, 6]),
                                                           np.zeros(len(boxes))], 1)[:, None, :]
    verts = np.concatenate([corners, centre, front], 1).reshape(-1, 3)
    per_box = np.concatenate([EDGES, [[8, 9]]])
    lines = (per_box[None] + 10 * np.arange(len(boxes))[:, None, None]).reshape(-1, 2)
    return verts, lines


MAX_ARROWS = 4000


def flow_arrows(points: np.ndarray, flow: np.ndarray, max_arrows: int = MAX_ARROWS, head: float = 0.3
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vertices [A * 4, 3], line index pairs [A * 3, 2], arrow index [A] into points) of at most `max_arrows`
    arrows (every k-th finite row): shaft p -> p + f and a head of two strokes of `head` x |f| turned 25
    degrees about z (in the x-y plane)."""
    points, flow = np.asarray(points, np.float64)[:, :3], np.asarray(flow, np.float64)
    rows = np.flatnonzero(np.isfinite(flow).all(1))
    rows = rows[::max(1, -(-len(rows) // max_arrows))]
    p, f = points[rows], flow[rows]
    tip = p + f
    c, s = np.cos(np.radians(25.0)), np.sin(np.radians(25.0))
    back = -head * f
    left = np.stack([c * back[:, 0] - s * back[:, 1], s * back[:, 0] + c * back[:, 1], back[:, 2]], 1)
    right = np.stack([c * back[:, 0] + s * back[:, 1], -s * back[:, 0] + c * back[:, 1], back[:, 2]], 1)
    verts = np.stack([p, tip, tip + left, tip + right], 1).reshape(-1, 3)
    base = 4 * np.arange(len(rows))[:, None, None]
    lines = (np.array([[0, 1], [1, 2], [1, 3]])[None] + base).reshape(-1, 2)
    return verts, lines, rows


def motion_arrows(boxes: np.ndarray, min_speed: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """flow_arrows from each box centre to where it is a second later, for boxes [K, 9] whose velocity (vx, vy) is
    known and above min_speed m/s; none for boxes [K, 7]."""
    boxes = np.asarray(boxes, np.float64)
    boxes = boxes.reshape(-1, boxes.shape[-1] if boxes.size else 7)
    velocity = np.c_[boxes[:, 7:9], np.zeros(len(boxes))] if boxes.shape[1] >= 9 else np.full((len(boxes), 3), np.nan)
    moving = np.isfinite(velocity).all(1) & (np.hypot(velocity[:, 0], velocity[:, 1]) > min_speed)
    velocity[~moving] = np.nan  # flow_arrows skips non-finite rows
    return flow_arrows(boxes[:, :3], velocity)


def to_linear(srgb: np.ndarray) -> np.ndarray:
    """sRGB colours (0..1, as palettes are written) -> the linear values Open3D's renderer expects, so a
    palette colour is displayed as itself rather than brightened by the output gamma."""
    c = np.asarray(srgb, np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def geometries(scene: Scene, color_mode: str = "height", min_score: float = 0.0) -> list[tuple[str, object]]:
    """[(name, open3d geometry)]: 'points', then 'gt_i' and 'pred_i' line sets (a box with a velocity also
    draws an arrow to where it is a second later)."""
    import open3d as o3d

    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(scene.points[:, :3], np.float64)))
    colors = (flow_colors(scene.flow) if scene.flow is not None and color_mode != "class" else
              point_colors(scene.points, color_mode, scene.point_labels, palette=scene.palette))
    pcd.colors = o3d.utility.Vector3dVector(to_linear(colors).astype(np.float64))
    out: list[tuple[str, object]] = [("points", pcd)]
    if scene.flow is not None:
        verts, lines, rows = flow_arrows(scene.points, scene.flow)
        arrows = o3d.geometry.LineSet(o3d.utility.Vector3dVector(verts), o3d.utility.Vector2iVector(lines))
        arrows.colors = o3d.utility.Vector3dVector(np.repeat(to_linear(flow_colors(scene.flow)[rows]), 3, 0)
                                                   .astype(np.float64))
        out.append(("flow", arrows))

    def add(boxes, colors, prefix, scores=None):
        if boxes is None or len(boxes) == 0:
            return
        for i, box in enumerate(np.asarray(boxes)):
            if scores is not None and scores[i] < min_score:
                continue
            verts, lines = box_lines(box[None])
            arrow, strokes, _ = motion_arrows(box[None])  # a second of motion, when the box has a velocity
            verts, lines = np.concatenate([verts, arrow]), np.concatenate([lines, strokes + len(verts)])
            ls = o3d.geometry.LineSet(o3d.utility.Vector3dVector(verts), o3d.utility.Vector2iVector(lines))
            color = np.asarray(box_color(None) if colors is None else colors[i], np.float64)
            if scores is not None:  # fainter boxes for lower scores
                color = color * (0.35 + 0.65 * float(np.clip(scores[i], 0, 1)))
            ls.colors = o3d.utility.Vector3dVector(np.tile(to_linear(color), (len(lines), 1)))
            out.append((f"{prefix}_{i}", ls))

    add(scene.gt_boxes, None, "gt")
    add(scene.pred_boxes, scene.pred_colors(), "pred", scene.pred_scores)
    return out
