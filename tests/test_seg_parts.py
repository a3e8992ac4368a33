"""Segmentation parts: U-Net blocks, SDSC, voxel <-> point maps, losses, evaluator, .label writer."""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from pc3d.eval.hooks import SegmentationEvaluator
from pc3d.models.backbones3d.dsconv import DSResidualBlock, SparseDepthwiseSeparableConv
from pc3d.models.backbones3d.unet import ResidualBlock, SparseUNet
from pc3d.models.losses import SegmentationLoss, lovasz_softmax
from pc3d.models.losses.lovasz import lovasz_grad
from pc3d.models.segmentors import SparseSegmentor, fill_point_to_voxel, voxel_labels
from pc3d.sparse import SparseTensor

torch.manual_seed(0)


def random_tensor(n=400, channels=8, size=16, batch=2, seed=0) -> SparseTensor:
    g = torch.Generator().manual_seed(seed)
    parts = []
    for b in range(batch):
        c = torch.unique(torch.randint(0, size, (n, 3), generator=g), dim=0)
        parts.append(torch.cat([torch.full((len(c), 1), b), c], 1))
    coords = torch.cat(parts).int()
    return SparseTensor(torch.randn(len(coords), channels, generator=g), coords, (size, size, size), batch)


@pytest.mark.parametrize("block", [ResidualBlock, DSResidualBlock])
@pytest.mark.parametrize("cin, cout", [(8, 8), (8, 16)])
def test_residual_blocks_keep_sites_and_pass_gradients(block, cin, cout):
    x = random_tensor(channels=cin)
    x.feats.requires_grad_(True)
    m = block(cin, cout, indice_key="k")
    y = m(x)
    assert y.feats.shape == (len(x), cout) and torch.equal(y.coords, x.coords)
    y.feats.square().sum().backward()
    assert x.feats.grad is not None and x.feats.grad.abs().sum() > 0
    assert all(p.grad is not None for p in m.parameters())


@pytest.mark.parametrize("kind", ["subm", "spconv"])
def test_sdsc_is_depthwise_then_pointwise(kind):
    x = random_tensor(channels=8)
    conv = SparseDepthwiseSeparableConv(8, 12, 3 if kind == "subm" else 2, kind, stride=1 if kind == "subm" else 2)
    assert conv.depthwise.groups == 8 and conv.depthwise.weight.shape == (8, *conv.depthwise.kernel_size, 1)
    y = conv(x)
    assert y.feats.shape[1] == 12
    if kind == "subm":
        assert torch.equal(y.coords, x.coords)
    else:
        assert y.stride == (2, 2, 2) and len(y) < len(x)
    dense_params = 27 * 8 * 12
    assert sum(p.numel() for p in conv.parameters()) < dense_params / 4


def test_sdsc_depthwise_weights_train():
    x = random_tensor(channels=8)
    m = DSResidualBlock(8, 8)
    before = m.conv1[0].depthwise.weight.detach().clone()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    target = torch.randn(len(x), 8)
    for _ in range(3):
        opt.zero_grad()
        loss = (m(x).feats - target).square().mean()
        loss.backward()
        assert m.conv1[0].depthwise.weight.grad.abs().sum() > 0
        opt.step()
    assert not torch.allclose(m.conv1[0].depthwise.weight, before)


@pytest.mark.parametrize("separable", [False, True])
def test_unet_shapes_gradients_and_parameters(separable):
    x = random_tensor(channels=4, size=24)
    m = SparseUNet(4, (8, 16, 24, 32), (1, 1, 1), (24, 16, 16), (1, 1, 1), separable=separable)
    y = m(x)
    assert torch.equal(y.coords, x.coords) and y.feats.shape == (len(x), m.out_channels) and m.out_channels == 16
    y.feats.sum().backward()
    assert all(p.grad is not None for p in m.parameters())


def test_unet_decoder_reuses_the_encoders_maps(monkeypatch):
    """The inverse conv returns to its paired conv's input sites with the maps built there: a U-Net builds each
    level's submanifold map once (encoder and decoder share it), and its outputs and gradients are bitwise those
    of building every map afresh."""
    import pc3d.sparse.conv as conv

    def run(fresh: bool):
        built = []
        build = conv.submanifold_map

        def spy(x, kernel_size, dilation):
            built.append(len(x.coords))
            return build(x, kernel_size, dilation)

        monkeypatch.setattr(conv, "submanifold_map", spy)
        if fresh:  # no map reaches the decoder: it builds its own
            monkeypatch.setattr(conv.KernelMap, "in_maps", property(lambda self: None, lambda self, v: None))
        torch.manual_seed(0)
        m = SparseUNet(4, (8, 16, 24), (1, 1), (16, 16), (1, 1))
        x = random_tensor(channels=4, size=24)
        x.feats.requires_grad_()
        y = m(x)
        y.feats.square().sum().backward()
        monkeypatch.undo()
        return built, y.feats.detach(), x.feats.grad, [p.grad for p in m.parameters()]

    shared, fresh = run(False), run(True)
    assert len(shared[0]) == len(set(shared[0])) == 3  # one map per level
    assert len(fresh[0]) == 5 and sorted(set(fresh[0])) == sorted(shared[0])  # levels 0 and 1 built twice
    for a, b in zip([*shared[1:3], *shared[3]], [*fresh[1:3], *fresh[3]], strict=True):
        assert torch.equal(a, b)


def test_separable_unet_has_at_most_half_the_parameters():
    args = (4, (16, 32, 48, 64), (1, 1, 1), (64, 48, 32), (1, 1, 1))
    dense = sum(p.numel() for p in SparseUNet(*args).parameters())
    separable = sum(p.numel() for p in SparseUNet(*args, separable=True).parameters())
    assert separable <= 0.5 * dense


def _pointcept_spunet_parameters(cin: int, channels=(32, 64, 128, 256, 256, 128, 96, 96),
                                 layers=(2, 3, 4, 6, 2, 2, 2, 2), base: int = 32) -> int:
    """Parameters of Pointcept's SpUNet-v1m1 backbone without its final conv, counted from its definition: a
    kernel-5 SubM stem + BN; per stage a kernel-2 down conv + BN and BasicBlocks (two SubM 3^3 + BN, a 1x1 + BN
    projection where the width changes); per decoder stage a kernel-2 inverse conv + BN and BasicBlocks, the
    first on cat(up, skip)."""
    def block(cin_, cout):
        return 27 * cin_ * cout + 27 * cout * cout + 4 * cout + (cin_ * cout + 2 * cout if cin_ != cout else 0)

    total = 125 * cin * base + 2 * base
    enc, stages = base, len(layers) // 2
    dec = channels[-1]
    for s in range(stages):
        total += 8 * enc * channels[s] + 2 * channels[s] + layers[s] * block(channels[s], channels[s])
        up_in = channels[len(channels) - s - 2]
        total += 8 * up_in * dec + 2 * dec + block(dec + enc, dec)
        total += (layers[len(channels) - s - 1] - 1) * block(dec, dec)
        enc, dec = channels[s], channels[len(channels) - s - 2]
    return total


def test_unet_builds_pointcepts_spunet():
    net = SparseUNet(4, (32, 32, 64, 128, 256), (2, 3, 4, 6), (256, 128, 96, 96), (2, 2, 2, 2), stem_kernel=5,
                     stem_blocks=0)
    assert sum(p.numel() for p in net.parameters()) == _pointcept_spunet_parameters(4) == 39_147_904
    assert len(net.stem) == 1 and net.out_channels == 96


def test_unet_rejects_mismatched_stage_lists():
    with pytest.raises(ValueError, match="len"):
        SparseUNet(4, (8, 16), (1, 1), (8,), (1,))


def test_fill_point_to_voxel_nearest_and_ignore():
    points = torch.tensor([[0.0, 0, 0], [10, 0, 0], [0.4, 0, 0], [9.0, 0, 0], [0.0, 0, 0], [5.0, 5, 5]])
    point_batch = torch.tensor([0, 0, 0, 0, 1, 1])
    p2v = torch.tensor([0, 1, -1, -1, 2, -1])
    voxel_batch = torch.tensor([0, 0, 1])
    filled = fill_point_to_voxel(p2v, points, point_batch, voxel_batch, "nearest")
    assert filled.tolist() == [0, 1, 0, 1, 2, 2]  # a point only takes a voxel of its own sample
    assert torch.equal(fill_point_to_voxel(p2v, points, point_batch, voxel_batch, "ignore"), p2v)


def test_voxel_labels_majority_vote():
    p2v = torch.tensor([0, 0, 0, 1, 1, 2, -1])
    labels = torch.tensor([3, 3, 1, 0, 0, 2, 5])
    assert voxel_labels(p2v, labels, 4, 6, ignore_index=0).tolist() == [3, 0, 2, 0]


def test_lovasz_perfect_prediction_is_zero_and_wrong_is_positive():
    labels = torch.tensor([0, 1, 2, 2, 1])
    perfect = torch.nn.functional.one_hot(labels, 3).float()
    assert lovasz_softmax(perfect, labels).item() == pytest.approx(0.0, abs=1e-7)
    wrong = torch.nn.functional.one_hot((labels + 1) % 3, 3).float()
    assert lovasz_softmax(wrong, labels).item() == pytest.approx(1.0)  # IoU 0 for every present class


def test_lovasz_hand_case_equals_one_minus_iou_for_hard_predictions():
    # class 1: gt {0, 1}, pred {1, 2} -> IoU 1/3; class 0: gt {2, 3}, pred {0, 3} -> IoU 1/3
    labels = torch.tensor([1, 1, 0, 0])
    probs = torch.tensor([[1.0, 0], [0, 1], [0, 1], [1, 0]])
    assert lovasz_softmax(probs, labels).item() == pytest.approx(2 / 3)
    # an ignored point changes nothing
    labels_ign = torch.tensor([1, 1, 0, 0, -1])
    probs_ign = torch.cat([probs, torch.tensor([[0.5, 0.5]])])
    assert lovasz_softmax(probs_ign, labels_ign, ignore_index=-1).item() == pytest.approx(2 / 3)


def test_lovasz_equals_the_lovasz_extension_class_by_class():
    """Soft predictions: each class's term is the Lovasz extension of its Jaccard loss, evaluated as the
    sum over the points in decreasing error of error x (Jaccard loss of the first k - of the first k-1);
    "present" averages the classes in the labels (class 3 absent here), "all" every class."""
    torch.manual_seed(0)
    probs = torch.randn(40, 4).softmax(1)
    labels = torch.randint(0, 3, (40,))

    def extension(c):
        fg = (labels == c).double()
        err = (fg - probs[:, c].double()).abs()
        order = torch.argsort(err, descending=True)
        total, previous = 0.0, 0.0
        for k in range(1, len(order) + 1):
            top = torch.zeros_like(fg)
            top[order[:k]] = 1.0  # the k largest errors: mispredicted set of the first k points
            inter = (fg * (1 - top)).sum()
            union = fg.sum() + (top * (1 - fg)).sum()
            jaccard = (1 - inter / union).item() if union > 0 else 0.0
            total += err[order[k - 1]].item() * (jaccard - previous)
            previous = jaccard
        return total

    terms = [extension(c) for c in range(4)]
    assert lovasz_softmax(probs, labels).item() == pytest.approx(sum(terms[:3]) / 3, rel=1e-5)
    assert lovasz_softmax(probs, labels, classes="all").item() == pytest.approx(sum(terms) / 4, rel=1e-5)


def test_radix_argsort_equals_a_stable_descending_sort():
    """pc3d_ops.sort orders rows of non-negative float32 (ties, zeros, ones, inf, NaN first as torch puts it,
    a constant row whose passes are all skipped, subnormals) exactly as a stable sort by decreasing value."""
    from pc3d_ops.sort import argsort_rows_descending

    rng = np.random.default_rng(0)
    rows = [rng.random(3000), np.round(rng.random(3000), 2), np.full(3000, 0.25),
            rng.choice([0.0, 1.0, np.inf, np.nan, 1e-40, 0.5], 3000), rng.random(3000) * 1e-3]
    keys = np.stack(rows).astype(np.float32)
    order = np.empty(keys.shape, np.int64)
    argsort_rows_descending(keys.view(np.uint32), order)
    for row, got in zip(keys, order, strict=True):
        nan = np.isnan(row)  # NaN first, then the values downwards; lexsort is stable
        np.testing.assert_array_equal(got, np.lexsort((-np.where(nan, 0, row), ~nan)))


def test_lovasz_equals_the_sort_and_mask_formulation():
    """The radix-sorted, index-selected loss equals the textbook one (torch.sort, boolean masks) in value and
    gradient, with many tied errors (quantised probabilities) and ignored points."""
    def textbook(probs, labels, ignore_index):
        keep = labels != ignore_index
        probs, labels = probs[keep], labels[keep]
        fg = torch.nn.functional.one_hot(labels, probs.shape[1]).to(probs.dtype).t()
        present = fg.sum(1) > 0
        fg, probs = fg[present], probs.t()[present]
        errors, order = (fg - probs).abs().sort(1, descending=True)
        return (errors * lovasz_grad(fg.gather(1, order))).sum(1).mean()

    torch.manual_seed(0)
    labels = torch.randint(0, 9, (5000,))
    for quantise in (False, True):
        logits = torch.randn(5000, 12) * 3
        if quantise:
            logits = torch.round(logits)
        grads = []
        for loss_fn in (lovasz_softmax, textbook):
            x = logits.clone().requires_grad_(True)
            loss = loss_fn(x.softmax(1), labels, ignore_index=0)
            loss.backward()
            grads.append((loss.detach(), x.grad))
        torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-8)


def test_lovasz_gradient_flows():
    logits = torch.randn(50, 4, requires_grad=True)
    lovasz_softmax(logits.softmax(1), torch.randint(0, 4, (50,))).backward()
    assert logits.grad.abs().sum() > 0


def test_segmentation_loss_weights_and_ignore():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]])
    labels = torch.tensor([0, 2, 0])  # the first row is ignored
    loss = SegmentationLoss(3, ignore_index=0, class_weights=[1.0, 1.0, 3.0], lovasz_weight=0.0)(logits, labels)
    expected = torch.nn.functional.cross_entropy(logits[1:2], labels[1:2])
    assert loss["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    weighted = SegmentationLoss(3, ignore_index=-1, class_weights=[1.0, 1.0, 3.0], lovasz_weight=0.0)
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    w = torch.tensor([1.0, 3.0, 1.0])
    assert weighted(logits, labels)["loss"].item() == pytest.approx(((ce * w).sum() / w.sum()).item(), rel=1e-6)
    all_ignored = SegmentationLoss(3, ignore_index=0)(logits, torch.zeros(3, dtype=torch.long))
    assert all_ignored["loss"].item() == 0.0
    switched_off = SegmentationLoss(3, ignore_index=-1, class_weights=[0.0, 1.0, 1.0], lovasz_weight=0.0)
    logits.requires_grad_(True)
    out = switched_off(logits, torch.tensor([0, -1, 0]))  # only a class of weight 0 scored: 0, not 0 / 0
    out["loss"].backward()
    assert out["loss"].item() == 0.0 and torch.isfinite(logits.grad).all()


def tiny_batch(num_points=(300, 200), ignore_index=0, extent=8.0):
    g = torch.Generator().manual_seed(1)
    points, p2v, coords, labels = [], [], [], []
    nv = 0
    for b, n in enumerate(num_points):
        xyz = torch.rand(n, 3, generator=g) * extent
        cells = xyz.floor().long()
        uniq, inv = torch.unique(cells, dim=0, return_inverse=True)
        points.append(torch.cat([xyz, torch.rand(n, 1, generator=g)], 1))
        p2v.append(inv + nv)
        coords.append(torch.cat([torch.full((len(uniq), 1), b), uniq.flip(1)], 1))
        labels.append((xyz[:, 0] > 4).long() + 1)
        nv += len(uniq)
    p2v = torch.cat(p2v)
    p2v[:5] = -1  # outside the range
    counts = torch.bincount(p2v[p2v >= 0], minlength=nv).int()
    return {"batch_size": len(num_points), "frame_id": [f"00/{i:06d}" for i in range(len(num_points))],
            "points": torch.cat(points), "point_labels": torch.cat(labels), "point_to_voxel": p2v,
            "point_offsets": torch.tensor([0, *np.cumsum(num_points)]), "voxel_coords": torch.cat(coords).int(),
            "voxel_num_points": counts,
            "point_batch": torch.repeat_interleave(torch.arange(len(num_points)), torch.tensor(num_points)),
            "spatial_shape": (8, 8, 8)}


@pytest.mark.parametrize("loss_on,point_branch", [("voxels", 0), ("points", 0), ("points", 8)])
def test_segmentor_train_and_eval_contract(loss_on, point_branch):
    batch = tiny_batch()
    unet = partial(SparseUNet, channels=(8, 16), enc_depths=(1,), dec_channels=(8,), dec_depths=(1,))
    model = SparseSegmentor(4, unet, num_classes=3, ignore_index=0, loss_on=loss_on, point_branch=point_branch)
    out = model(batch)
    assert out["loss"].ndim == 0 and out["loss"].requires_grad
    out["loss"].backward()
    model.eval()
    with torch.no_grad():
        preds = model(batch)
    assert [len(p["pred_labels"]) for p in preds] == [300, 200]  # one label per original point
    assert all((p["pred_labels"] != 0).all() for p in preds)  # the ignored train id is never predicted
    model.unmapped = "ignore"
    with torch.no_grad():
        preds = model(batch)
    assert (preds[0]["pred_labels"][:5] == 0).all()


def test_evaluator_conventions():
    # scored classes 1..3 (0 ignored); class 3 absent from the ground truth and never predicted
    gt = np.array([1, 1, 2, 2, 0, 0])
    pred = np.array([1, 2, 2, 2, 1, 3])
    m = SegmentationEvaluator(4, ignore_index=0, class_names=["unlabeled", "a", "b", "c"])(None, [
        {"pred_labels": pred, "point_labels": gt}])
    assert m["num_classes_present"] == 2
    assert m["iou"] == pytest.approx({"a": 50.0, "b": 200 / 3})
    assert m["mIoU"] == pytest.approx((50 + 200 / 3) / 2)
    assert m["mIoU_official"] == pytest.approx((50 + 200 / 3) / 3)
    # c predicted on a labelled point (IoU 0), d in neither: the headline over a, b; ScanNet's rule over a, b, c
    # (d's union is empty: NaN in its script); SemanticKITTI's over all four
    names = ["unlabeled", "a", "b", "c", "d"]
    one = [{"pred_labels": np.array([1, 3, 2, 2]), "point_labels": np.array([1, 1, 2, 2])}]
    rules = {rule: SegmentationEvaluator(5, 0, names, official=rule)(None, one)
             for rule in ("semantickitti", "scannet")}
    assert rules["scannet"]["mIoU"] == pytest.approx(75.0) and rules["scannet"]["mIoU_official"] == pytest.approx(50.0)
    assert rules["semantickitti"]["mIoU_official"] == pytest.approx(37.5)
    from types import SimpleNamespace  # by default the dataset names its rule (ScanNetDataset.miou_rule)

    assert SegmentationEvaluator(5, 0, names)(SimpleNamespace(miou_rule="scannet"), one)["mIoU_official"] == 50.0


def test_label_writer_writes_raw_ids(tmp_path):
    from pc3d.eval.seg_writer import write_semantickitti_labels

    preds = [{"frame_id": "08/000003", "pred_labels": np.array([1, 9, 19, 0])}]
    write_semantickitti_labels(preds, tmp_path)
    raw = np.fromfile(tmp_path / "sequences" / "08" / "predictions" / "000003.label", "<u4")
    assert raw.tolist() == [10, 40, 81, 0]  # car, road, traffic-sign, unlabeled


def test_unet_norm_momentum_reaches_every_batch_norm():
    for separable in (False, True):
        net = SparseUNet(4, [8, 8, 16], [1, 1], [16, 8], [1, 1], separable=separable, norm_momentum=0.1)
        norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm1d)]
        assert norms and all(m.momentum == 0.1 for m in norms)


def test_point_branch_separates_points_that_share_a_voxel():
    """Labels decided by a point's own colour, mixed inside every voxel: the voxel head cannot beat the
    majority, the point-fusion head learns them."""
    batch = tiny_batch(extent=2.0)  # 8 voxels per sample, dozens of points in each
    batch["point_labels"] = (batch["points"][:, 3] > 0.5).long() + 1
    mapped = batch["point_to_voxel"] >= 0

    def accuracy(point_branch: int) -> float:
        torch.manual_seed(0)
        unet = partial(SparseUNet, channels=(8, 16), enc_depths=(1,), dec_channels=(8,), dec_depths=(1,))
        model = SparseSegmentor(4, unet, num_classes=3, ignore_index=0, loss_on="points", point_branch=point_branch)
        opt = torch.optim.Adam(model.parameters(), lr=0.02)
        for _ in range(60):
            opt.zero_grad()
            model(batch)["loss"].backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            pred = np.concatenate([p["pred_labels"] for p in model(batch)])
        return float((pred[mapped.numpy()] == batch["point_labels"][mapped].numpy()).mean())

    assert accuracy(8) > 0.9 > 0.7 > accuracy(0)


def test_a_multi_scan_sample_is_predicted_for_its_current_scan():
    """With past scans (n_past_scans) a sample's rows are its current scan first: only those are scored and written
    (the semantic-kitti-api scores each scan's points once; the MOS head cuts them the same way)."""
    from types import SimpleNamespace

    batch = {"point_offsets": torch.tensor([0, 5, 9]), "num_current_points": torch.tensor([3, 2]),
             "point_to_voxel": torch.arange(9), "point_labels": torch.arange(9) % 3, "frame_id": ["a", "b"],
             "batch_size": 2}
    logits = torch.nn.functional.one_hot(torch.arange(9) % 3, 3).float()
    head = SimpleNamespace(ignore_index=0, num_classes=3)
    first, second = SparseSegmentor.predictions(head, batch, logits, torch.ones(9, dtype=torch.bool))
    np.testing.assert_array_equal(first["point_labels"], [0, 1, 2])
    np.testing.assert_array_equal(second["point_labels"], [2, 0])
    assert len(first["pred_labels"]) == 3 and len(second["pred_labels"]) == 2
