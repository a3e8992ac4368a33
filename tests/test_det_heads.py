"""Detection heads: target assignment and decoding round trips, losses, post-processing on crafted cases."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pc3d.errors import ConfigError
from pc3d.geometry import ResidualCoder, iou_3d_aligned
from pc3d.models.heads.anchor_head import AnchorHead
from pc3d.models.heads.anchors import AnchorGenerator, assign_targets
from pc3d.models.heads.center_head import CenterHead
from pc3d.models.heads.center_targets import center_targets, draw_gaussian, gaussian_radius
from pc3d.models.heads.losses import gaussian_focal_loss, sigmoid_focal_loss
from pc3d.models.postprocess import PostProcessor

RANGE = [0.0, -12.8, -3.0, 25.6, 12.8, 1.0]
VOXEL = [0.1, 0.1, 0.2]
CLASSES = ["Car", "Pedestrian", "Cyclist"]
SIZES = [[3.9, 1.6, 1.56], [0.8, 0.6, 1.73], [1.76, 0.6, 1.73]]


def gt_batch() -> dict:
    boxes = np.array([[8.0, 2.0, -0.9, 4.2, 1.7, 1.5, 0.3, 1],
                      [15.3, -5.1, -0.8, 3.8, 1.6, 1.6, -2.8, 1],
                      [5.2, -3.3, -0.85, 0.7, 0.6, 1.75, 1.2, 2],
                      [20.1, 6.4, -0.9, 1.8, 0.6, 1.7, -1.0, 3]], np.float32)
    return {"gt_boxes": torch.from_numpy(boxes)[None], "num_gt": torch.tensor([4]), "frame_id": ["f0"],
            "batch_size": 1}


def test_anchor_generator_layout():
    gen = AnchorGenerator(RANGE, SIZES, [-1.78, -0.6, -0.6])
    anchors = gen(32, 32)
    assert anchors.shape == (32, 32, 6, 7)
    assert np.allclose(anchors[0, 0, 0, :2], [0.4, -12.4])
    assert np.allclose(anchors[0, 0, 1, 6], math.pi / 2, atol=1e-6)
    assert gen.classes().tolist() == [1, 1, 2, 2, 3, 3]
    assert np.allclose(anchors[..., 2, 2], -0.6 + 1.73 / 2)
    assert np.allclose(anchors[0, 0, 0, 3:6], SIZES[0]) and np.allclose(anchors[0, 0, 1, 3:6], SIZES[0])  # dx, dy, dz
    one = AnchorGenerator(RANGE, [[3.9, 1.6, 1.56]], [-1.78], (0.0,))(4, 4)
    assert np.allclose(one[..., 0, 3:6], [3.9, 1.6, 1.56]) and np.allclose(one[..., 0, 6], 0.0)


def test_anchor_assignment_round_trip():
    """Every box gets a positive anchor of its class; decoding the targets at positives gives the box back."""
    head = AnchorHead(16, 3, RANGE, SIZES, [-1.78, -0.6, -0.6], [0.6, 0.5, 0.5], [0.45, 0.35, 0.35])
    anchors, classes = head.anchors(64, 64)
    b = gt_batch()["gt_boxes"][0].numpy()
    labels, targets, headings = assign_targets(anchors, classes, b[:, :7], b[:, 7].astype(np.int64),
                                               head.matched, head.unmatched, head.coder)
    pos = torch.nonzero(labels > 0)[:, 0].numpy()
    decoded = head.coder.decode(targets.numpy()[pos], anchors[pos])
    ious = np.asarray(iou_bev_match(decoded, b))
    assert (ious > 0.999).all()
    for k in range(len(b)):  # each box owns at least one positive anchor of its own class
        owners = pos[np.abs(decoded[:, :3] - b[k, :3]).sum(1) < 1e-3]
        assert len(owners) and (labels.numpy()[owners] == b[k, 7]).all()
    assert (headings.numpy()[pos] != 0).all()


def iou_bev_match(decoded: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Best 3D IoU of each decoded box with any ground-truth box."""
    from pc3d.geometry import iou_3d

    return np.asarray(iou_3d(decoded.astype(np.float64), boxes[:, :7].astype(np.float64))).max(1)


def perfect_outputs(head: AnchorHead, batch: dict) -> tuple[dict, torch.Tensor]:
    """Head outputs equal to the head's own targets on a 32 x 32 map: class logits +-10, box deltas = targets,
    direction logits 10 on the bin of the matched heading (bins of width pi from dir_offset); and the labels."""
    anchors, classes = head.anchors(32, 32)
    b = batch["gt_boxes"][0].numpy()
    labels, targets, headings = assign_targets(anchors, classes, b[:, :7], b[:, 7].astype(np.int64),
                                               head.matched, head.unmatched, head.coder)
    cls = torch.full((1, len(anchors), 3), -10.0)
    pos = labels > 0
    cls[0, pos, labels[pos] - 1] = 10.0
    rot = torch.remainder(headings - head.dir_offset, 2 * math.pi)
    dir_bin = (rot / math.pi).floor().long().clamp(max=1)
    out = {"cls": cls, "box": targets[None], "dir": torch.nn.functional.one_hot(dir_bin, 2).float()[None] * 10,
           "map_size": (32, 32)}
    return out, labels


def test_anchor_head_perfect_logits_recover_boxes():
    """Feeding the head its own targets as outputs decodes to the ground truth (direction bins included)."""
    head = AnchorHead(16, 3, RANGE, SIZES, [-1.78, -0.6, -0.6], [0.6, 0.5, 0.5], [0.45, 0.35, 0.35],
                      score_threshold=0.5)
    batch = gt_batch()
    b = batch["gt_boxes"][0].numpy()
    out, _ = perfect_outputs(head, batch)
    (boxes, scores, labels_out), = head.predict(out)
    pred = PostProcessor(score_threshold=0.5, iou_threshold=0.1)([(boxes, scores, labels_out)], ["f0"])[0]
    assert len(pred["boxes"]) == len(b)
    order = np.argsort(pred["boxes"][:, 0])
    ref = b[np.argsort(b[:, 0])]
    assert np.allclose(pred["boxes"][order, :6], ref[:, :6], atol=1e-4)
    assert np.allclose(np.cos(pred["boxes"][order, 6] - ref[:, 6]), 1, atol=1e-5)
    assert (pred["labels"][order] == ref[:, 7]).all()


def test_anchor_head_loss_of_perfect_outputs():
    """The perfect outputs' direction logits (10 on the right bin, 0 on the other) cost log(1 + e^-10) = 4.5e-5
    per positive: the loss's direction target uses the bins predict() reads (width 2 pi / 2 from dir_offset).
    Ignored anchors (IoU between the thresholds) carry no classification loss: +10 logits there change nothing."""
    head = AnchorHead(16, 3, RANGE, SIZES, [-1.78, -0.6, -0.6], [0.6, 0.5, 0.5], [0.45, 0.35, 0.35])
    batch = gt_batch()
    out, labels = perfect_outputs(head, batch)
    losses = head.loss(out, batch)
    assert losses["loss_dir"].item() < 1e-3
    ignored = labels < 0
    assert ignored.any()
    out["cls"][0, ignored] = 10.0
    assert abs(head.loss(out, batch)["loss_cls"].item() - losses["loss_cls"].item()) < 1e-6


def test_assign_targets_forced_anchor_regresses_to_the_box_it_is_forced_by():
    """1 x 1 anchors at x = 0 and 0.5, 1 x 1 boxes A at x = 0 and B at x = 1.2 (BEV IoU = x overlap / union):
    anchor 0: IoU(A) = 1; anchor 1: IoU(A) = 0.5 / 1.5 = 0.33, IoU(B) = 0.3 / 1.7 = 0.18. Anchor 1 is B's best
    anchor, so it is positive and regresses to B: dx = (1.2 - 0.5) / diagonal sqrt(2), not A's -0.5 / sqrt(2)."""
    anchors = np.array([[0, 0, 0, 1, 1, 1, 0], [0.5, 0, 0, 1, 1, 1, 0]], np.float32)
    gt = np.array([[0, 0, 0, 1, 1, 1, 0], [1.2, 0, 0, 1, 1, 1, 0]], np.float32)
    labels, targets, _ = assign_targets(anchors, np.array([1, 1]), gt, np.array([1, 1]), [0.6], [0.45],
                                        ResidualCoder())
    assert labels.tolist() == [1, 1]
    assert abs(targets[1, 0].item() - 0.7 / math.sqrt(2)) < 1e-5


def test_assign_targets_ignore_band():
    """A 4 x 2 box at x = 0; 4 x 2 anchors at x = 0 (IoU 1), 1.3 (overlap 2.7 x 2 = 5.4, union 16 - 5.4 = 10.6,
    IoU 0.509, between 0.45 and 0.6: ignored) and 20 (IoU 0: background)."""
    anchors = np.array([[x, 0, 0, 4, 2, 1.5, 0] for x in (0, 1.3, 20)], np.float32)
    gt = np.array([[0, 0, 0, 4, 2, 1.5, 0]], np.float32)
    labels, _, _ = assign_targets(anchors, np.array([1, 1, 1]), gt, np.array([1]), [0.6], [0.45], ResidualCoder())
    assert labels.tolist() == [1, -1, 0]


def test_assign_targets_uses_the_class_own_thresholds():
    """A class-2 box 0.8 x 0.6 at x = 0; anchors at x = 0 (IoU 1) and 0.25 (overlap 0.55 x 0.6 = 0.33, union
    0.96 - 0.33 = 0.63, IoU 0.524): positive under class 2's 0.5, where class 1's 0.6 would ignore it."""
    anchors = np.array([[x, 0, 0, 0.8, 0.6, 1.73, 0] for x in (0, 0.25)], np.float32)
    gt = np.array([[0, 0, 0, 0.8, 0.6, 1.73, 0]], np.float32)
    labels, _, _ = assign_targets(anchors, np.array([2, 2]), gt, np.array([2]), [0.6, 0.5], [0.45, 0.35],
                                  ResidualCoder())
    assert labels.tolist() == [2, 2]


def test_anchor_head_keeps_a_crowded_frames_rarer_classes():
    """1,100 car candidates above the threshold and 150 pedestrian ones, all lower scoring: the head's cap across
    classes (OpenPCDet's NMS_PRE_MAXSIZE, 4,096) must leave the pedestrians to the per-class post-processing."""
    head = AnchorHead(16, 3, RANGE, SIZES, [-1.78, -0.6, -0.6], [0.6, 0.5, 0.5], [0.45, 0.35, 0.35])
    anchors, classes = head.anchors(32, 32)
    rng = np.random.default_rng(0)
    cls = torch.full((1, len(anchors), 3), -10.0)
    cars = rng.choice(np.flatnonzero(classes == 1), 1100, replace=False)  # anchor classes are 1..K
    walkers = rng.choice(np.flatnonzero(classes == 2), 150, replace=False)
    cls[0, cars, 0] = torch.logit(torch.from_numpy(rng.uniform(0.6, 0.9, 1100)).float())
    cls[0, walkers, 1] = torch.logit(torch.from_numpy(rng.uniform(0.3, 0.5, 150)).float())
    out = {"cls": cls, "box": torch.zeros(1, len(anchors), 7), "dir": torch.zeros(1, len(anchors), 2),
           "map_size": (32, 32)}
    (_, _, labels), = head.predict(out)
    assert np.bincount(labels.numpy(), minlength=4)[1:].tolist() == [1100, 150, 0]


def test_anchor_head_loss_and_gradients():
    head = AnchorHead(16, 3, RANGE, SIZES, [-1.78, -0.6, -0.6], [0.6, 0.5, 0.5], [0.45, 0.35, 0.35])
    x = torch.randn(1, 16, 32, 32, requires_grad=True)
    losses = head.loss(head(x), gt_batch())
    assert set(losses) >= {"loss", "loss_cls", "loss_box", "loss_dir"}
    losses["loss"].backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    empty = {"gt_boxes": torch.zeros(2, 0, 8), "num_gt": torch.tensor([0, 0]), "frame_id": ["a", "b"],
             "batch_size": 2}
    assert head.loss(head(torch.randn(2, 16, 32, 32)), empty)["num_pos"] == 0  # not the clamped normaliser


@torch.no_grad()
def test_anchor_head_normalises_by_the_batch_or_by_each_frame():
    """Two frames, 4 boxes and 1: "frame" (OpenPCDet's) is the mean of the frames' own losses, "batch" the frames'
    losses weighted by their positive anchors."""
    torch.manual_seed(0)
    two = gt_batch()
    two = {"gt_boxes": torch.cat([two["gt_boxes"], two["gt_boxes"]]), "num_gt": torch.tensor([4, 1]),
           "frame_id": ["f0", "f1"], "batch_size": 2}
    x = torch.randn(2, 16, 32, 32)
    for normalize in ("batch", "frame"):
        head = AnchorHead(16, 3, RANGE, SIZES, [-1.78, -0.6, -0.6], [0.6, 0.5, 0.5], [0.45, 0.35, 0.35],
                          normalize=normalize)
        both = head.loss(head(x), two)
        alone = [head.loss(head(x[i:i + 1]), {"gt_boxes": two["gt_boxes"][i:i + 1], "num_gt": two["num_gt"][i:i + 1],
                                              "frame_id": [f"f{i}"], "batch_size": 1}) for i in range(2)]
        pos = torch.tensor([a["num_pos"] for a in alone])
        assert pos[0] > pos[1] > 0
        share = torch.full((2,), 0.5) if normalize == "frame" else pos / pos.sum()
        for key in ("loss_cls", "loss_box", "loss_dir", "loss"):
            want = sum(w * a[key] for w, a in zip(share, alone, strict=True))
            torch.testing.assert_close(both[key], want, rtol=1e-5, atol=1e-7)
    with pytest.raises(ConfigError, match="normalize"):
        AnchorHead(16, 3, RANGE, SIZES, [-1.78, -0.6, -0.6], [0.6, 0.5, 0.5], [0.45, 0.35, 0.35], normalize="anchor")


def test_code_weights_scale_the_difference_before_the_smooth_l1():
    """OpenPCDet's rule: weight 2 on a 0.5 error costs smooth-L1(1.0) = 1 - beta / 2, not 2 x smooth-L1(0.5)."""
    from pc3d.models.heads.losses import weighted_smooth_l1

    pred, target = torch.tensor([[0.5, 0.5]]), torch.zeros(1, 2)
    got = weighted_smooth_l1(pred, target, torch.ones(1), torch.tensor([2.0, 1.0]), beta=1 / 9)
    assert got.item() == pytest.approx((1 - 1 / 18) + (0.5 - 1 / 18))


def test_gaussian_targets():
    # CenterNet / CenterPoint's three cases (their code, roots halved as written there), h = 4, w = 10, overlap 0.1:
    #   r1 = (14 + sqrt(14^2 - 4 * 40 * 0.9 / 1.1)) / 2 = (14 + sqrt(65.09)) / 2 = 11.03
    #   r2 = (28 + sqrt(28^2 - 16 * 0.9 * 40)) / 2 = (28 + sqrt(208)) / 2 = 21.21
    #   r3 = (-2.8 + sqrt(2.8^2 + 16 * 0.1 * 0.9 * 40)) / 2 = (-2.8 + sqrt(65.44)) / 2 = 2.6447   <- the minimum
    assert gaussian_radius(4, 10, 0.1) == pytest.approx((-2.8 + math.sqrt(65.44)) / 2, rel=1e-9)
    # h = w = 10: r3 = (-4 + sqrt(16 + 16 * 0.1 * 0.9 * 100)) / 2 = (-4 + sqrt(160)) / 2 = 2 sqrt(10) - 2 = 4.3246
    # (r1 = 14.26, r2 = 26.32); min_overlap 0.7 would give 2.733
    assert gaussian_radius(10, 10, 0.1) == pytest.approx(2 * math.sqrt(10) - 2, rel=1e-9)
    hm = np.zeros((9, 9), np.float32)
    draw_gaussian(hm, 0, 8, 2)  # clipped at the corner
    assert hm[8, 0] == 1 and hm.max() == 1 and (hm > 0).sum() == 9
    hm = np.zeros((9, 9), np.float32)
    draw_gaussian(hm, 4, 4, 2)
    assert np.allclose(hm, hm.T) and hm[4, 4] == 1 and (hm > 0).sum() == 25
    # diameter 2r + 1 = 5, sigma = 5 / 6, 2 sigma^2 = 50 / 36: a cell at squared distance d2 holds exp(-0.72 d2)
    assert hm[4, 5] == pytest.approx(math.exp(-0.72), rel=1e-6)  # 0.4868
    assert hm[3, 5] == pytest.approx(math.exp(-1.44), rel=1e-6)  # 0.2369
    assert hm[6, 5] == pytest.approx(math.exp(-3.6), rel=1e-6)  # d2 = 5: 0.0273
    assert hm[2, 2] == pytest.approx(math.exp(-5.76), rel=1e-6)  # corner of the patch, d2 = 8


def center_head(with_iou: bool = False) -> CenterHead:
    return CenterHead(16, CLASSES, [["Car"], ["Pedestrian", "Cyclist"]], VOXEL, RANGE, out_stride=4,
                      shared_channels=8, head_channels=8, with_iou=with_iou, score_threshold=0.5)


def test_center_targets_round_trip():
    """Heat-map peaks and regression targets of the ground truth decode back to the boxes."""
    head = center_head()
    batch = gt_batch()
    targets = head.targets(batch, (64, 64), "cpu")
    preds = []
    for tgt, task in zip(targets, head.tasks, strict=True):
        logit = torch.logit(tgt["heatmap"].clamp(1e-4, 1 - 1e-4))
        maps = torch.zeros(1, 8, 64 * 64)
        idx = tgt["index"][0][tgt["mask"][0]]
        maps[0, :, idx] = tgt["targets"][0][tgt["mask"][0]].T
        maps = maps.view(1, 8, 64, 64)
        preds.append({"hm": logit, "center": maps[:, 0:2], "center_z": maps[:, 2:3], "dim": maps[:, 3:6],
                      "rot": maps[:, 6:8]})
        assert tgt["heatmap"].shape == (1, len(task), 64, 64)
        assert int(tgt["mask"].sum()) == sum(int((batch["gt_boxes"][0, :, 7] == k).sum()) for k in task)
    cands = head.predict(preds)
    pred = PostProcessor(score_threshold=0.9, nms="circle", min_radius=1.0)(cands, ["f0"])[0]
    b = batch["gt_boxes"][0].numpy()
    assert len(pred["boxes"]) == len(b)
    order, ref = np.argsort(pred["boxes"][:, 0]), b[np.argsort(b[:, 0])]
    assert np.allclose(pred["boxes"][order], ref[:, :7], atol=1e-4)
    assert (pred["labels"][order] == ref[:, 7]).all()


def test_center_head_tasks_in_any_class_order():
    """A task lists its classes in any order: channel c of its heatmap is task[c]'s, in targets as in predict
    (a sorted order was assumed: [Pedestrian, Cyclist, Car] drew the car into the pedestrian channel)."""
    head = CenterHead(16, CLASSES, [["Pedestrian", "Cyclist", "Car"]], VOXEL, RANGE, out_stride=4, shared_channels=8,
                      head_channels=8)
    boxes = gt_batch()["gt_boxes"][0].numpy()
    (target,) = head.targets(gt_batch(), (64, 64), "cpu")
    for channel, label in enumerate(head.tasks[0]):
        peaks = (target["heatmap"][0, channel] == 1).nonzero().tolist()
        cells = [[int((b[1] - RANGE[1]) / 0.4), int((b[0] - RANGE[0]) / 0.4)] for b in boxes if b[7] == label]
        assert sorted(peaks) == sorted(cells)


@pytest.mark.parametrize("with_iou", [False, True])
def test_center_head_loss_and_gradients(with_iou):
    head = center_head(with_iou)
    x = torch.randn(2, 16, 64, 64, requires_grad=True)
    batch = gt_batch()
    batch = {**batch, "gt_boxes": batch["gt_boxes"].repeat(2, 1, 1), "num_gt": torch.tensor([4, 2]),
             "batch_size": 2}
    losses = head.loss(head(x), batch)
    assert ("loss_iou" in losses) == with_iou
    losses["loss"].backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_overflowing_sizes_are_a_large_loss_not_an_error():
    """exp(log size) overflowing (a diverging step) leaves the IoU branch no box to measure: target IoU 0 there, and
    the log sizes' regression loss is large, as without the branch; iou_3d_aligned refused the boxes and ended the
    run."""
    head = center_head(True)
    head.train()
    preds = head(torch.randn(1, 16, 64, 64))
    for pred in preds:
        pred["dim"] = pred["dim"] + 100.0
    loss = head.loss(preds, gt_batch())["loss"]
    assert torch.isfinite(loss) and loss > 100


def test_iou_rectification_comes_after_the_score_threshold():
    """A cell of low heat is dropped however high its predicted IoU (OpenPCDet's order); a kept cell's score is
    heat ** (1 - a) * IoU ** a."""
    head = center_head(with_iou=True)  # score_threshold 0.5
    preds = []
    for task in head.tasks:
        hm = torch.full((1, len(task), 64, 64), -20.0)
        iou = torch.full((1, 1, 64, 64), -1.0)
        hm[0, 0, 10, 10], iou[0, 0, 10, 10] = torch.logit(torch.tensor(0.2)), 1.0  # heat 0.2, IoU 1: 0.2 ** 0.32 > 0.5
        hm[0, 0, 30, 30], iou[0, 0, 30, 30] = torch.logit(torch.tensor(0.8)), 0.0  # heat 0.8, IoU 0.5
        maps = torch.zeros(1, 8, 64, 64)
        preds.append({"hm": hm, "center": maps[:, 0:2], "center_z": maps[:, 2:3], "dim": maps[:, 3:6],
                      "rot": maps[:, 6:8], "iou": iou})
    boxes, scores, labels = head.predict(preds)[0]
    assert len(scores) == 2 and labels.tolist() == [1, 2]  # one box a task, the high-heat one
    a = head.iou_rectifier[labels]
    assert torch.allclose(scores, 0.8 ** (1 - a) * 0.5 ** a)
    assert torch.allclose(boxes[:, 0], torch.tensor(RANGE[0] + 30 * 4 * VOXEL[0]))  # column 30, not 10


def test_center_targets_skip_outside_boxes():
    from pc3d.geometry import CenterPointCoder

    coder = CenterPointCoder(VOXEL, RANGE, 4)
    boxes = np.array([[-5.0, 0, 0, 4, 2, 1.5, 0], [10.0, 0, 0, 4, 2, 1.5, 0]], np.float32)
    t = center_targets(boxes, np.array([0, 0]), 1, (64, 64), coder)
    assert t["mask"].sum() == 1 and t["heatmap"].max() == 1
    assert np.allclose(t["boxes"][0], boxes[1])


def test_focal_losses():
    logits = torch.tensor([[4.0, -4.0], [-4.0, -4.0]])
    good = sigmoid_focal_loss(logits, torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.ones(2))
    bad = sigmoid_focal_loss(logits, torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.ones(2))
    assert good < 0.01 < bad
    hm = torch.zeros(1, 1, 8, 8)
    hm[0, 0, 3, 3] = 1
    perfect = gaussian_focal_loss(torch.where(hm > 0, 8.0, -8.0), hm)
    wrong = gaussian_focal_loss(torch.where(hm > 0, -8.0, 8.0), hm)
    assert perfect < 0.01 < wrong

    # Hand-computed. Focal loss (Lin et al.): alpha_t (1 - p_t)^gamma CE, alpha_t = alpha (0.25) on positives and
    # 1 - alpha on negatives, gamma 2; sigma(4) = 0.982014, sigma(-4) = 0.017986, log(1 + e^-4) = 0.0181499.
    one = torch.ones(1)
    # confident positive, logit 4, target 1: 0.25 * 0.017986^2 * 0.0181499 = 1.4679e-6
    pos = sigmoid_focal_loss(torch.tensor([[4.0]]), torch.tensor([[1.0]]), one)
    assert pos.item() == pytest.approx(1.4678924e-6, rel=1e-4)
    # confident negative, logit -4, target 0: 0.75 * 0.017986^2 * 0.0181499 = 4.4037e-6
    neg = sigmoid_focal_loss(torch.tensor([[-4.0]]), torch.tensor([[0.0]]), one)
    assert neg.item() == pytest.approx(4.4036773e-6, rel=1e-4)
    # missed positive, logit -4, target 1: 0.25 * 0.982014^2 * (4 + 0.0181499) = 0.968727
    missed = sigmoid_focal_loss(torch.tensor([[-4.0]]), torch.tensor([[1.0]]), one)
    assert missed.item() == pytest.approx(0.9687268, rel=1e-4)
    # per-anchor weights scale whole rows: 2 x (missed + neg) + 0.5 x (pos + neg)
    both = sigmoid_focal_loss(torch.tensor([[-4.0, -4.0], [4.0, -4.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]]),
                              torch.tensor([2.0, 0.5]))
    assert both.item() == pytest.approx(2 * (0.9687268 + 4.4036773e-6) + 0.5 * (1.4678924e-6 + 4.4036773e-6),
                                        rel=1e-4)

    # CenterNet's heat-map focal loss, alpha 2, beta 4, divided by the number of peaks (cells equal to 1):
    #   peak:      -(1 - p)^2 log p;   other cell: -(1 - y)^4 p^2 log(1 - p)
    # Two peaks predicted at the clamp 1 - 1e-4 (each 1e-8 * 1e-4 = 1e-12), background at the clamp 1e-4 (1e-12
    # each), one Gaussian cell y = 0.5 predicted 0.5: -(0.0625 * 0.25 * log 0.5) = 0.0108304; / 2 peaks = 0.0054152.
    hm = torch.zeros(1, 1, 8, 8)
    hm[0, 0, 1, 1] = hm[0, 0, 6, 6] = 1
    hm[0, 0, 3, 4] = 0.5
    logits = torch.where(hm == 1, 20.0, -20.0)
    logits[0, 0, 3, 4] = 0.0
    assert gaussian_focal_loss(logits, hm).item() == pytest.approx(-math.log(0.5) * 0.25 * 0.0625 / 2, rel=1e-5)
    # a peak predicted 0.5 instead: its -(1 - 0.5)^2 log 0.5 = 0.1732868 joins, still over 2 peaks
    logits[0, 0, 6, 6] = 0.0
    assert gaussian_focal_loss(logits, hm).item() == pytest.approx(-math.log(0.5) * 0.25 * (1 + 0.0625) / 2,
                                                                   rel=1e-5)


def test_postprocess_rotated_nms_and_topk():
    boxes = np.array([[0, 0, 0, 4, 2, 1.5, 0], [0.1, 0, 0, 4, 2, 1.5, 0.05], [10, 0, 0, 4, 2, 1.5, 0],
                      [0, 0, 0, 0.8, 0.6, 1.7, 0], [20, 0, 0, 4, 2, 1.5, 7.0]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.05], np.float32)
    labels = np.array([1, 1, 1, 2, 1])
    out = PostProcessor(score_threshold=0.1, nms="rotated", iou_threshold=0.5).frame(boxes, scores, labels)
    assert out["scores"].tolist() == pytest.approx([0.9, 0.7, 0.6])  # the overlapping car goes, the pedestrian stays
    assert out["labels"].tolist() == [1, 1, 2]
    top = PostProcessor(score_threshold=0.0, nms="none", post_max_size=2).frame(boxes, scores, labels)
    assert len(top["boxes"]) == 2 and top["scores"][0] == pytest.approx(0.9)
    assert (np.abs(top["boxes"][:, 6]) <= math.pi).all()
    circ = PostProcessor(score_threshold=0.1, nms="circle", min_radius=1.0).frame(boxes, scores, labels)
    assert circ["scores"].tolist() == pytest.approx([0.9, 0.7, 0.6])
    empty = PostProcessor().frame(np.zeros((0, 7), np.float32), np.zeros(0), np.zeros(0))
    assert empty["boxes"].shape == (0, 7)


def test_iou_branch_target_is_exact_for_perfect_boxes():
    b = gt_batch()["gt_boxes"][0, :, :7]
    assert torch.allclose(torch.as_tensor(iou_3d_aligned(b, b)).float(), torch.ones(4), atol=1e-5)


@pytest.mark.parametrize("experiment", ["centerpoint_sim_waymo_iou", "dsvt_pillar_sim_kitti", "flatformer_sim_kitti"])
def test_an_iou_recipes_post_processor_keeps_what_its_head_kept(experiment):
    """The head thresholds the heat (0.1); a box of heat 0.3 whose IoU branch rectified its score to 0.05 is
    kept, as OpenPCDet's NMS takes no score threshold after rectification."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    configs = Path(__file__).resolve().parents[1] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base=None):
        cfg = compose("config", overrides=[f"experiment={experiment}"])
    assert cfg.model.dense_head.with_iou
    post = instantiate(cfg.model.post_process)
    boxes = torch.tensor([[5.0, 0, 0, 4, 2, 1.5, 0], [20.0, 5, 0, 4, 2, 1.5, 0]])
    out = post.frame(boxes, torch.tensor([0.05, 0.8]), torch.tensor([1, 1]))
    assert out["scores"].tolist() == pytest.approx([0.8, 0.05])


def test_center_head_without_a_shared_conv_and_1x1_branches_reads_each_cell_alone():
    """InsMOS's head: no shared conv, one 1x1 conv a branch: 16 x (3 + 8) weights + 11 biases, and a cell's outputs
    depend on that cell's features only."""
    from pc3d.errors import ConfigError

    head = CenterHead(16, CLASSES, [CLASSES], VOXEL, RANGE, out_stride=4, shared_channels=None, num_head_convs=1,
                      final_kernel=1).eval()
    assert sum(p.numel() for p in head.parameters()) == 16 * 11 + 11
    x = torch.randn(1, 16, 6, 6)
    changed = x.clone()
    changed[0, :, 2, 3] += 1.0
    with torch.no_grad():
        a, b = head(x)[0], head(changed)[0]
    for name in a:
        moved = (a[name] != b[name]).any(1)[0]
        assert moved[2, 3] and moved.sum() == 1, name
    with pytest.raises(ConfigError, match="final_kernel must be 1 or 3"):
        CenterHead(16, CLASSES, [CLASSES], VOXEL, RANGE, out_stride=4, final_kernel=5)
