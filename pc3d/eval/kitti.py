"""KITTI 3D object detection AP: 2D bbox, BEV, 3D and AOS at R11 and R40, as the official devkit.

Inputs are per-frame annotation dicts in the layout of ``pc3d.eval.kitti_io`` (camera frame;
``dimensions`` = l, h, w; detections also carry ``score``). The rules are the devkit's
(``evaluate_object.cpp`` and its python port in second.pytorch / OpenPCDet):

- difficulty levels Easy / Moderate / Hard (``kitti_difficulty``, the one definition pc3d uses): a
  ground truth is ignored (neither TP nor FN, but it may absorb a detection) when its 2D height
  <= 40 / 25 / 25 px, occlusion > 0 / 1 / 2 or truncation > 0.15 / 0.30 / 0.50; neighbouring
  classes (Van for Car, Person_sitting for Pedestrian) are always ignored that way; detections
  lower than the minimum height are ignored (a detection exactly 40 px tall counts at Easy);
- matching per frame is greedy in ground-truth order; detections inside DontCare regions
  (intersection over detection area above the overlap threshold, 2D bbox metric) are not FPs;
- 41 score thresholds from the matched TPs' scores (``getThresholds``), precision interpolated as
  the max over higher recall, AP R11 = mean of points 0, 4, ..., 40 and R40 = mean of points 1..40;
- overlaps: 2D IoU of the image boxes; BEV IoU of the rotated (x, z, l, w, rotation_y) rectangles
  in the camera ground plane; 3D IoU = BEV intersection x height overlap / union volume. They are
  exact (float64, ``pc3d.geometry``); the python port computes the rotated ones in float32, which
  only matters for an IoU within ~1e-6 of a threshold.

Deviation: where a threshold leaves no TP and no FP, precision is 0 (the python port gives NaN).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pc3d_ops.kitti_eval import N_SAMPLE_PTS, kitti_pr

from pc3d.errors import ConfigError, DataFormatError
from pc3d.geometry import iou_3d, iou_bev

from .kitti_io import check_anno

METRICS = ("bbox", "bev", "3d", "aos")
DIFFICULTIES = ("easy", "moderate", "hard")
MIN_HEIGHT = (40.0, 25.0, 25.0)
MAX_OCCLUSION = (0, 1, 2)
MAX_TRUNCATION = (0.15, 0.3, 0.5)
# Minimum overlaps (bbox, bev, 3d): "strict" is the official benchmark, "loose" the python port's second set.
MIN_OVERLAPS = {
    "strict": {"car": (0.7, 0.7, 0.7), "pedestrian": (0.5, 0.5, 0.5), "cyclist": (0.5, 0.5, 0.5),
               "van": (0.7, 0.7, 0.7), "person_sitting": (0.5, 0.5, 0.5), "truck": (0.7, 0.7, 0.7)},
    "loose": {"car": (0.7, 0.5, 0.5), "pedestrian": (0.5, 0.25, 0.25), "cyclist": (0.5, 0.25, 0.25),
              "van": (0.7, 0.5, 0.5), "person_sitting": (0.5, 0.25, 0.25), "truck": (0.5, 0.5, 0.5)},
}
NEIGHBOUR = {"car": "van", "pedestrian": "person_sitting"}
_RECALLS = ("R11", "R40")


def kitti_difficulty(height: np.ndarray, occluded: np.ndarray, truncated: np.ndarray) -> np.ndarray:
    """int8 [M]: the easiest KITTI level a ground truth belongs to (0 easy, 1 moderate, 2 hard), -1 none.

    height: 2D box height (bottom - top) px; occluded: 0..3; truncated: 0..1. The devkit's rule
    (evaluate_object.cpp, and clean_data in its python port): an object belongs to a level when its
    height is *above* the level's minimum (a box exactly 40 px tall is moderate, not easy; exactly
    25 px is none) and its occlusion and truncation are at most the level's maxima.
    """
    height, occluded, truncated = (np.asarray(a, np.float64) for a in (height, occluded, truncated))
    out = np.full(height.shape, -1, np.int8)
    for level in reversed(range(len(DIFFICULTIES))):
        ok = (height > MIN_HEIGHT[level]) & (occluded <= MAX_OCCLUSION[level]) & (truncated <= MAX_TRUNCATION[level])
        out[ok] = level
    return out


@dataclass
class KittiResult:
    """KITTI AP per overlap set, class, metric and difficulty (percent, 0..100).

    ap_r11 / ap_r40: float64 [S, C, 4, 3] over (overlap set, class, metric bbox/bev/3d/aos,
    difficulty easy/moderate/hard); the aos row is NaN when detections have no valid alpha (-10).
    precision: float64 [S, C, 4, 3, 41], the interpolated curves at recall 0, 1/40, ..., 1.
    recall: float64 [S, C, 3, 3] (percent) over (overlap set, class, metric bbox/bev/3d, difficulty): the
    share of counted ground truths that some detection finds at the overlap, whatever its score: where the
    precision curve ends. The devkit spends one score threshold on the hit nearest each 1/40 of recall and one
    on the last hit, so with many ground truths a curve scores the sample points its recall passes and the
    next one: two runs a few boxes either side of a sample point (0.925, say) differ by the next point's
    precision / 40 (about 2 AP at precision 0.8).
    num_gt: int64 [C, 3] counted (non-ignored) ground truths per class and difficulty.
    """

    classes: tuple[str, ...]
    overlap_sets: tuple[str, ...]
    min_overlaps: np.ndarray
    ap_r11: np.ndarray
    ap_r40: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    num_gt: np.ndarray
    aos_computed: bool

    def ap(self, cls: str, metric: str = "3d", difficulty: str = "moderate", recall: str = "R40",
           overlap: str = "strict") -> float:
        """One AP value, e.g. ``result.ap("Car", "3d", "moderate", "R40")``."""
        table = {"R11": self.ap_r11, "R40": self.ap_r40}[recall]
        return float(table[self.overlap_sets.index(overlap), self.classes.index(cls), METRICS.index(metric),
                           DIFFICULTIES.index(difficulty)])

    def max_recall(self, cls: str, metric: str = "3d", difficulty: str = "moderate", overlap: str = "strict") -> float:
        """The recall all detections together reach (see ``recall``), e.g. ``result.max_recall("Car", "3d")``."""
        return float(self.recall[self.overlap_sets.index(overlap), self.classes.index(cls), METRICS.index(metric),
                                 DIFFICULTIES.index(difficulty)])

    def to_dict(self) -> dict:
        """JSON-ready nested dict, plus OpenPCDet-style flat keys (``Car_3d/moderate_R40``) for the strict set."""
        out: dict = {"classes": list(self.classes), "overlap_sets": list(self.overlap_sets),
                     "aos_computed": self.aos_computed, "results": {}, "flat": {}}
        for c, cls in enumerate(self.classes):
            per_cls: dict = {"num_gt": {d: int(self.num_gt[c, k]) for k, d in enumerate(DIFFICULTIES)}}
            for s, name in enumerate(self.overlap_sets):
                entry: dict = {"min_overlap": dict(zip(METRICS[:3], map(float, self.min_overlaps[s, c]), strict=True)),
                               "recall": {m: {d: float(self.recall[s, c, i, k]) for k, d in enumerate(DIFFICULTIES)}
                                          for i, m in enumerate(METRICS[:3])}}
                for recall, table in zip(_RECALLS, (self.ap_r11, self.ap_r40), strict=True):
                    entry[recall] = {m: {d: _num(table[s, c, i, k]) for k, d in enumerate(DIFFICULTIES)}
                                     for i, m in enumerate(METRICS)}
                    if name == "strict":
                        for i, m in enumerate(METRICS):
                            tag = "image" if m == "bbox" else m
                            for k, d in enumerate(DIFFICULTIES):
                                suffix = "_R40" if recall == "R40" else ""
                                out["flat"][f"{cls}_{tag}/{d}{suffix}"] = _num(table[s, c, i, k])
                per_cls[name] = entry
            out["results"][cls] = per_cls
        return out


def _num(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def format_kitti_table(result: KittiResult, overlap: str = "strict") -> str:
    """Markdown table: one row per class and metric, Easy / Moderate / Hard at R11 and R40, and the recall the
    moderate curve ends at (``KittiResult.recall``)."""
    s = result.overlap_sets.index(overlap)
    lines = ["| class | metric | IoU | R11 easy | R11 mod. | R11 hard | R40 easy | R40 mod. | R40 hard | recall mod. |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c, cls in enumerate(result.classes):
        for i, m in enumerate(METRICS):
            if m == "aos" and not result.aos_computed:
                continue
            iou = f"{result.min_overlaps[s, c, 0 if m == 'aos' else i]:.2f}"
            vals = [f"{v:.2f}" for v in (*result.ap_r11[s, c, i], *result.ap_r40[s, c, i])]
            vals.append("-" if m == "aos" else f"{result.recall[s, c, i, 1]:.2f}")
            lines.append(f"| {cls} | {m} | {iou} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def camera_boxes_to_lidar_like(location: np.ndarray, dimensions: np.ndarray, rotation_y: np.ndarray) -> np.ndarray:
    """KITTI camera boxes -> [M, 7] float64 boxes in a right-handed frame (z, -x, -y) of the camera.

    location [M, 3] (bottom centre), dimensions [M, 3] (l, h, w), rotation_y [M]. The map is a
    rotation, so IoUs are those of the camera boxes; no calibration is needed.
    """
    x, y, z = location[:, 0], location[:, 1], location[:, 2]
    length, height, width = dimensions[:, 0], dimensions[:, 1], dimensions[:, 2]
    return np.stack([z, -x, -y + height / 2, length, width, height, -(rotation_y + np.pi / 2)], axis=1)


def _image_overlap(a: np.ndarray, b: np.ndarray, over_a: bool) -> np.ndarray:
    """[Na, Nb] 2D overlap of pixel boxes (l, t, r, b): IoU, or intersection / area of a."""
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    if over_a:
        denom = np.broadcast_to(area_a[:, None], inter.shape)
    else:
        area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        denom = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter > 0, inter / denom, 0.0)


def _concat(annos: list[dict], key: str, width: int | None = None) -> np.ndarray:
    parts = [np.asarray(a.get(key, ()), np.float64).reshape((-1, width) if width else (-1,)) for a in annos]
    return np.concatenate(parts) if parts else np.zeros((0, width) if width else 0)


def _frame_name(anno: dict, i: int) -> str:
    return f"frame {i}" + (f" ({anno['frame_id']})" if "frame_id" in anno else "")


def kitti_eval(gt_annos: list[dict], dt_annos: list[dict], classes: tuple[str, ...] = ("Car", "Pedestrian", "Cyclist"),
               overlap_sets: tuple[str, ...] = ("strict",)) -> KittiResult:
    """KITTI AP (bbox, BEV, 3D, AOS; R11 and R40; Easy / Moderate / Hard) of detections against labels.

    gt_annos, dt_annos: one dict per frame, same order (see ``pc3d.eval.kitti_io``); detections
    need ``score``. classes: names among Car, Pedestrian, Cyclist, Van, Person_sitting, Truck.
    overlap_sets: "strict" (official thresholds) and/or "loose" (Car 0.7 / 0.5 / 0.5, others 0.5 / 0.25 / 0.25).
    """
    if len(gt_annos) != len(dt_annos):
        raise DataFormatError(None, f"{len(gt_annos)} ground-truth frames but {len(dt_annos)} detection frames")
    for name in overlap_sets:
        if name not in MIN_OVERLAPS:
            raise ConfigError(f"unknown overlap set {name!r}; use 'strict' or 'loose'")
    for cls in classes:
        if cls.lower() not in MIN_OVERLAPS["strict"]:
            raise ConfigError(f"KITTI class {cls!r} is not evaluated; use {sorted(MIN_OVERLAPS['strict'])}")
    for i, (g, d) in enumerate(zip(gt_annos, dt_annos, strict=True)):
        check_anno(g, f"ground truth {_frame_name(g, i)}", need_score=False)
        check_anno(d, f"detections {_frame_name(d, i)}", need_score=True)

    gt_n = np.array([len(a["name"]) for a in gt_annos], np.int64)
    dt_n = np.array([len(a["name"]) for a in dt_annos], np.int64)
    gt_off = np.concatenate([[0], np.cumsum(gt_n)])
    dt_off = np.concatenate([[0], np.cumsum(dt_n)])
    gt_names = np.char.lower(np.concatenate([np.asarray(a["name"], str) for a in gt_annos] or [np.zeros(0, str)]))
    dt_names = np.char.lower(np.concatenate([np.asarray(a["name"], str) for a in dt_annos] or [np.zeros(0, str)]))
    gt_bbox, dt_bbox = _concat(gt_annos, "bbox", 4), _concat(dt_annos, "bbox", 4)
    gt_alpha, dt_alpha = _concat(gt_annos, "alpha"), _concat(dt_annos, "alpha")
    scores = _concat(dt_annos, "score")
    gt_occ, gt_trunc = _concat(gt_annos, "occluded"), _concat(gt_annos, "truncated")
    gt_difficulty = kitti_difficulty(gt_bbox[:, 3] - gt_bbox[:, 1], gt_occ, gt_trunc)
    dt_height = np.abs(dt_bbox[:, 3] - dt_bbox[:, 1])
    # the C++ devkit skips AOS when any alpha is the "invalid" -10
    aos_computed = bool(dt_alpha.size) and not np.any(dt_alpha == -10)

    overlaps, dc = _frame_overlaps(gt_annos, dt_annos, gt_names)
    S, C = len(overlap_sets), len(classes)
    min_ov = np.array([[MIN_OVERLAPS[s][c.lower()] for c in classes] for s in overlap_sets], np.float64)
    min_ov = min_ov.reshape(S, C, 3)
    precision = np.zeros((S, C, 4, 3, N_SAMPLE_PTS))
    recall = np.zeros((S, C, 3, 3))
    num_gt = np.zeros((C, 3), np.int64)
    no_dc = (np.zeros(0), np.zeros(len(gt_annos) + 1, np.int64), np.zeros(len(gt_annos), np.int64))
    for c, cls in enumerate(classes):
        cls_l = cls.lower()
        for k in range(3):
            ignored_gt, ignored_dt = _ignore_codes(cls_l, k, gt_names, gt_difficulty, dt_names, dt_height)
            num_gt[c, k] = int(np.sum(ignored_gt == 0))
            for s in range(S):
                for m in range(3):
                    ov, ov_off = overlaps[m]
                    dc_ov, dc_off, dc_num = dc if m == 0 else no_dc
                    aos = aos_computed and m == 0
                    _, pr, found = kitti_pr(ov, ov_off, gt_off, dt_off, dc_ov, dc_off, dc_num, ignored_gt,
                                            ignored_dt, scores, gt_alpha, dt_alpha, float(min_ov[s, c, m]),
                                            int(num_gt[c, k]), aos)
                    prec, orient = _curves(pr)
                    precision[s, c, m, k] = prec
                    recall[s, c, m, k] = 100.0 * found / num_gt[c, k] if num_gt[c, k] else 0.0
                    if aos:
                        precision[s, c, 3, k] = orient
    if not aos_computed:
        precision[:, :, 3] = np.nan
    ap_r11 = precision[..., 0::4].sum(-1) / 11 * 100
    ap_r40 = precision[..., 1:].sum(-1) / 40 * 100
    return KittiResult(tuple(classes), tuple(overlap_sets), min_ov, ap_r11, ap_r40, precision, recall, num_gt,
                       aos_computed)


def _ignore_codes(cls: str, level: int, gt_names, gt_difficulty, dt_names, dt_height):
    """Devkit ignore codes (int64): gt 0 counted / 1 ignored / -1 other; detections 0 / 1 too small / -1 other."""
    same = gt_names == cls
    neighbour = gt_names == NEIGHBOUR.get(cls, "\0")
    # the levels are nested (lower minimum height, more occlusion and truncation allowed as they go)
    harder = (gt_difficulty < 0) | (gt_difficulty > level)
    ignored_gt = np.full(gt_names.shape, -1, np.int64)
    ignored_gt[neighbour | (same & harder)] = 1
    ignored_gt[same & ~harder] = 0
    # a too-small detection is "ignored" (1) whatever its class, as in the devkit
    ignored_dt = np.where(dt_height < MIN_HEIGHT[level], 1, np.where(dt_names == cls, 0, -1)).astype(np.int64)
    return ignored_gt, ignored_dt


def _frame_overlaps(gt_annos: list[dict], dt_annos: list[dict], gt_names: np.ndarray):
    """Per-metric flat [D_f, G_f] overlap blocks with offsets, and the detection-vs-DontCare blocks."""
    blocks: list[list[np.ndarray]] = [[], [], []]
    dc_blocks, dc_num = [], []
    g0 = 0
    for g, d in zip(gt_annos, dt_annos, strict=True):
        ng, nd = len(g["name"]), len(d["name"])
        gb, db = np.asarray(g["bbox"], np.float64).reshape(ng, 4), np.asarray(d["bbox"], np.float64).reshape(nd, 4)
        blocks[0].append(_image_overlap(db, gb, over_a=False).ravel())
        if ng and nd:
            gl = camera_boxes_to_lidar_like(np.asarray(g["location"], np.float64).reshape(ng, 3),
                                            np.asarray(g["dimensions"], np.float64).reshape(ng, 3),
                                            np.asarray(g["rotation_y"], np.float64).reshape(ng))
            dl = camera_boxes_to_lidar_like(np.asarray(d["location"], np.float64).reshape(nd, 3),
                                            np.asarray(d["dimensions"], np.float64).reshape(nd, 3),
                                            np.asarray(d["rotation_y"], np.float64).reshape(nd))
            # DontCare rows carry placeholder 3D boxes (-1 sizes); zero them so the IoU kernel accepts them
            bad = (gl[:, 3:6] <= 0).any(axis=1)
            gl[bad, 3:6] = 1e-6
            gl[bad, :3] = -1e6
            blocks[1].append(np.asarray(iou_bev(dl, gl), np.float64).ravel())
            blocks[2].append(np.asarray(iou_3d(dl, gl), np.float64).ravel())
        else:
            blocks[1].append(np.zeros(0))
            blocks[2].append(np.zeros(0))
        is_dc = gt_names[g0:g0 + ng] == "dontcare"
        dc_blocks.append(_image_overlap(db, gb[is_dc], over_a=True).ravel())
        dc_num.append(int(is_dc.sum()))
        g0 += ng

    def pack(parts: list[np.ndarray]):
        off = np.concatenate([[0], np.cumsum([p.size for p in parts])]).astype(np.int64)
        return (np.concatenate(parts) if parts else np.zeros(0)), off

    overlaps = [pack(b) for b in blocks]
    dc_ov, dc_off = pack(dc_blocks)
    return overlaps, (dc_ov, dc_off, np.asarray(dc_num, np.int64))


def _curves(pr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """41-point interpolated precision and orientation similarity from pr [T, 4] (tp, fp, fn, similarity)."""
    prec = np.zeros(N_SAMPLE_PTS)
    orient = np.zeros(N_SAMPLE_PTS)
    t = pr.shape[0]
    if t:
        det = pr[:, 0] + pr[:, 1]
        safe = np.where(det > 0, det, 1.0)
        prec[:t] = np.where(det > 0, pr[:, 0] / safe, 0.0)
        orient[:t] = np.where(det > 0, pr[:, 3] / safe, 0.0)
    # precision at recall r = max precision at any recall >= r (suffix maximum)
    return np.maximum.accumulate(prec[::-1])[::-1], np.maximum.accumulate(orient[::-1])[::-1]
