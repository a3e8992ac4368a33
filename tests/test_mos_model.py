"""The 4D motion network (pc3d.models.mos.motion_net) and the MOS model (mos_net): shapes, time axis, gradients,
the prediction contract, unlabelled points, determinism; slow: a tiny model learns a simulated MOS sequence."""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pc3d.data.batch import Collate, sparse_input
from pc3d.errors import ConfigError
from pc3d.models.contract import check_prediction, task_of
from pc3d.models.mos.mos_net import (
    MosNet,
    current_mask,
    current_point_voxel,
    mos_loss,
    mos_predictions,
    net_input,
    point_probabilities,
)
from pc3d.models.mos.motion_net import MotionUNet
from pc3d.voxel import TemporalVoxelizer

RANGE = [-4.0, -4.0, -1.0, 4.0, 4.0, 1.0]
SCANS = 3  # current + 2 past, 0.1 s apart
FLOOR = 70.0  # moving IoU (percent) the slow test must pass (first run: 94.0)


def voxelizer(size: float = 0.5) -> TemporalVoxelizer:
    return TemporalVoxelizer([size] * 3, RANGE, 0.1, [-0.1 * (SCANS - 1) - 0.05, 0.05], time_column=4)


def make_sample(seed: int, frame: str, sizes=(120, 90, 80)) -> dict:
    """A multi-scan MOS sample: x, y, z, intensity, time; a few current points lie outside the grid."""
    rng = np.random.default_rng(seed)
    clouds, times = [], []
    for k, n in enumerate(sizes):
        xyz = rng.uniform([-4.5, -4.5, -0.9], [4.5, 4.5, 0.9], (n, 3))
        clouds.append(np.column_stack([xyz, rng.uniform(0, 1, n), np.full(n, -0.1 * k)]).astype(np.float32))
        times.append(np.full(n, -0.1 * k, np.float32))
    points = np.concatenate(clouds)
    labels = rng.choice([0, 1, 2], len(points), p=[0.2, 0.5, 0.3]).astype(np.int64)
    return {"frame_id": frame, "points": points, "num_current_points": sizes[0], "point_labels": labels,
            "moving_labels": labels - 1, "point_time": np.concatenate(times),
            "point_frame": np.repeat(np.arange(len(sizes)), sizes).astype(np.int64)}


def make_batch(samples=None, size: float = 0.5) -> dict:
    samples = samples or [make_sample(0, "00/000002"), make_sample(1, "00/000003", (100, 110, 70))]
    return Collate(voxelizer(size))(samples)


def tiny_model(**kwargs) -> MosNet:
    torch.manual_seed(0)
    unet = partial(MotionUNet, stem_channels=4, channels=(4, 8), dec_channels=(8, 4), stem_kernel=3)
    return MosNet(5, unet, **kwargs)


def test_motion_unet_keeps_input_sites_and_never_strides_time():
    batch = make_batch(size=0.125)  # a 16 x 64 x 64 grid: four halvings of space
    x = sparse_input(batch)
    torch.manual_seed(0)
    net = MotionUNet(5)  # the 4DMOS widths: 8 | 8, 16, 32, 64 | 64, 32, 16, 8
    out, scales = net.forward_features(x)
    assert net.out_channels == 8 and out.feats.shape == (len(x.coords), 8)
    assert torch.equal(out.coords, x.coords) and out.spatial_shape == x.spatial_shape
    assert [scales[f"enc{i}"].feats.shape[1] for i in range(5)] == [8, 8, 16, 32, 64]
    assert [scales[f"dec{i}"].feats.shape[1] for i in range(4)] == [8, 16, 32, 64]
    times = set(x.coords[:, 1].tolist())
    for i in range(1, 5):
        enc = scales[f"enc{i}"]
        assert enc.spatial_shape[0] == x.spatial_shape[0]  # time extent kept, space halved
        assert all(s <= -(-full // 2 ** i) for s, full in zip(enc.spatial_shape[1:], x.spatial_shape[1:], strict=True))
        assert set(enc.coords[:, 1].tolist()) == times
    stem_conv = net.stem[0]
    assert stem_conv.kernel_size == (1, 5, 5, 5) and net.down[0][0].stride == (1, 2, 2, 2)


def test_mos_net_train_loss_reaches_every_parameter():
    model = tiny_model()
    assert task_of(model) == "mos"
    model.train()
    out = model(make_batch())
    assert set(out) >= {"loss", "loss_mos", "acc", "moving_iou"} and out["loss"].ndim == 0
    out["loss"].backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_occupancy_input_reads_one_constant_channel_whatever_the_point_columns():
    model = tiny_model(voxel_input="occupancy").eval()
    assert model.backbone.stem[0].in_channels == 1
    batch = make_batch()
    changed = {**batch, "points": batch["points"].clone()}
    changed["points"][:, 3] = 7.0  # intensity: the mean columns change, the occupancy does not
    with torch.no_grad():
        assert torch.equal(model.moving_probabilities(batch)["probabilities"],
                           model.moving_probabilities(changed)["probabilities"])
        assert not torch.equal(tiny_model().eval().moving_probabilities(batch)["probabilities"],
                               tiny_model().eval().moving_probabilities(changed)["probabilities"])
    with pytest.raises(ConfigError, match="voxel_input, InsMOS motion_input\\) must be one of"):
        tiny_model(voxel_input="ones")


def test_occupancy_input_never_averages_the_points(monkeypatch):
    import pc3d.voxel

    model = tiny_model(voxel_input="occupancy").eval()
    batch = make_batch()
    with torch.no_grad():
        want = model.head(model.backbone(net_input(sparse_input(batch), "occupancy")).feats)
        monkeypatch.setattr(pc3d.voxel, "scatter_mean", lambda *a, **k: pytest.fail("the points were averaged"))
        x = model.voxels(batch)
        assert torch.equal(x.feats, torch.ones(len(x.feats), 1))
        assert torch.equal(model.head(model.backbone(x).feats), want)


def test_predictions_follow_the_contract_on_the_current_scan():
    batch = make_batch()
    model = tiny_model().eval()
    with torch.no_grad():
        preds = model(batch)
    assert [p["frame_id"] for p in preds] == batch["frame_id"]
    offsets = batch["point_offsets"].tolist()
    for b, pred in enumerate(preds):
        n = int(batch["num_current_points"][b])
        check_prediction("mos", pred, n)
        assert pred["moving"].dtype == np.uint8 and set(np.unique(pred["moving"])) <= {0, 1}
        np.testing.assert_array_equal(pred["point_labels"], batch["point_labels"][offsets[b]:offsets[b] + n].numpy())


def test_current_mask_selects_the_first_rows_of_each_sample():
    batch = make_batch()
    mask = current_mask(batch)
    assert mask.tolist() == [True] * 120 + [False] * 170 + [True] * 100 + [False] * 180


def test_unlabelled_points_add_no_loss():
    batch = make_batch()
    torch.manual_seed(0)
    logits = torch.randn(len(batch["voxel_coords"]), 2, requires_grad=True)
    out = mos_loss(logits, batch)
    p2v, labels = batch["point_to_voxel"], batch["point_labels"]
    keep = (p2v >= 0) & (labels > 0)
    expected = F.cross_entropy(logits[p2v[keep]], labels[keep] - 1)
    torch.testing.assert_close(out["loss"], expected)
    out["loss"].backward()
    only_unlabelled = torch.ones(len(logits), dtype=torch.bool)
    only_unlabelled[p2v[keep]] = False  # voxels with a labelled point
    assert only_unlabelled.any()
    assert torch.count_nonzero(logits.grad[only_unlabelled]) == 0
    # relabelling the unlabelled points as static or moving, then unlabelled again, changes nothing; and
    # a batch where everything is unlabelled gives zero loss that still back-propagates
    again = dict(batch, point_labels=torch.where(labels > 0, labels, torch.zeros_like(labels)))
    assert torch.equal(mos_loss(logits, again)["loss"], out["loss"])
    none = mos_loss(logits, dict(batch, point_labels=torch.zeros_like(labels)))
    assert float(none["loss"].detach()) == 0.0 and none["loss"].requires_grad


def test_unlabelled_points_leave_the_model_loss_unchanged():
    """Model level: the loss with some labelled points turned unlabelled equals the cross-entropy of the rest
    (the network's input, hence its logits, never sees labels)."""
    batch = make_batch()
    model = tiny_model().train()
    labels = batch["point_labels"].clone()
    flip = torch.arange(len(labels)) % 3 == 0
    hidden = dict(batch, point_labels=torch.where(flip, torch.zeros_like(labels), labels))
    loss_hidden = model(hidden)["loss"]
    keep = ~flip
    restricted = mos_loss_from_model(model, batch, keep)
    torch.testing.assert_close(loss_hidden, restricted)


def mos_loss_from_model(model: MosNet, batch: dict, keep: torch.Tensor) -> torch.Tensor:
    x = sparse_input(batch)
    logits = model.head(model.backbone(x).feats)
    return mos_loss(logits, batch, point_mask=keep)["loss"]


def test_second_forward_is_identical():
    batch = make_batch()
    model = tiny_model(return_log_odds=True)
    model.train()
    first_loss, second_loss = model(batch)["loss"], model(batch)["loss"]
    assert torch.equal(first_loss, second_loss)
    model.eval()
    with torch.no_grad():
        first, second = model(batch), model(batch)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a["moving"], b["moving"])
        np.testing.assert_array_equal(a["log_odds"], b["log_odds"])
        assert a["log_odds"].dtype == np.float32 and a["measured"].dtype == np.bool_
        assert len(a["log_odds"]) == len(a["measured"]) > len(a["moving"])  # the whole window
        assert not a["measured"].all() and (a["log_odds"][~a["measured"]] == 0).all()


def test_points_outside_the_grid_take_the_nearest_current_voxel_or_static():
    sample = make_sample(0, "00/000001", (2, 1))
    sample["points"][:, :3] = [[1.1, 1.1, 0.1], [4.6, 4.6, 0.1], [-3.0, -3.0, 0.1]]  # current 0 in, 1 out; past
    sample["points"][:, 4] = sample["point_time"] = np.array([0, 0, -0.1], np.float32)
    batch = make_batch([sample])
    assert batch["point_to_voxel"].tolist()[1] == -1
    t = batch["voxel_coords"][:, 1]
    assert len(t) == 2
    moving = torch.where(t == t.max(), 1.0, -1.0)  # the current-scan voxel says moving, the past one static
    logits = torch.stack([-moving, moving], 1)
    voxel_batch = batch["voxel_coords"][:, 0].long()
    nearest, static = (mos_predictions(batch, probabilities[mapped], mapped)[0]["moving"] for probabilities, mapped in
                       (point_probabilities(batch, logits, voxel_batch, policy) for policy in ("nearest", "static")))
    assert nearest.tolist() == [1, 1] and static.tolist() == [1, 0]


def test_rejects_bad_settings():
    with pytest.raises(ValueError, match="unmapped"):
        tiny_model(unmapped="ignore")
    with pytest.raises(ValueError, match="class_weights"):
        tiny_model(class_weights=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="dec_channels"):
        MotionUNet(5, channels=(8, 16), dec_channels=(8,))


@pytest.mark.slow
def test_tiny_motion_net_learns_a_simulated_mos_sequence(tmp_path):
    """A tiny MosNet trained for 40 steps on two windows (5 scans each) of a simulated SemanticKITTI
    sequence separates moving from static points there. First run: moving IoU 0.0 before training, 94.0
    after (FLOOR leaves a margin)."""
    from pc3d.data import SemanticKittiDataset
    from pc3d.data.transforms import RangeCrop
    from pc3d.eval.hooks import MosEvaluator
    from pc3d.sim.api import simulate_dataset

    simulate_dataset("semantickitti_mos", tmp_path, frames=7, seed=0, columns=512, sequence_length=7)
    crop = [-19.2, -19.2, -3.0, 19.2, 19.2, 1.8]
    dataset = SemanticKittiDataset(tmp_path, sequences=[0], mode="mos", n_past_scans=4, transforms=[RangeCrop(crop)],
                                   training=False, voxelizer=TemporalVoxelizer([0.3] * 3, crop, 0.1, [-0.45, 0.05], 4))
    batches = [dataset.collate_fn([dataset[i]]) for i in (4, 5, 6)]
    assert all(int((b["point_labels"] == 2).sum()) > 100 for b in batches), "the simulator wrote no moving points"
    torch.manual_seed(0)
    model = MosNet(5, partial(MotionUNet, stem_channels=8, channels=(8, 16, 32), dec_channels=(32, 16, 8)))
    evaluator = MosEvaluator()

    def moving_iou() -> float:
        model.eval()
        with torch.no_grad():
            preds = [p for b in batches for p in model(b)]
        model.train()
        return evaluator(dataset, preds)["moving_IoU"]

    before = moving_iou()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for step in range(40):
        optimizer.zero_grad()
        model(batches[step % len(batches)])["loss"].backward()
        optimizer.step()
    after = moving_iou()
    print(f"moving IoU {before:.1f} -> {after:.1f}")
    assert after > max(FLOOR, before + 20), (before, after)


def _unmapped_batch():
    # sample 0: current scan rows 0-1 (row 1 outside the grid), a past scan's row 2
    return {"points": torch.tensor([[5.0, 0, 0], [0.1, 0, 0], [0.2, 0, 0]]),
            "point_batch": torch.zeros(3, dtype=torch.long), "point_offsets": torch.tensor([0, 3]),
            "num_current_points": torch.tensor([2]), "point_to_voxel": torch.tensor([0, -1, 1]), "batch_size": 1,
            "frame_id": ["f"]}


def test_an_unmapped_current_point_takes_the_nearest_voxel_of_the_current_scan():
    # voxel 1 holds only a past scan's point: not a candidate, however near
    assert current_point_voxel(_unmapped_batch(), torch.tensor([0, 0])).tolist() == [0, 0]


def test_log_odds_are_measured_only_where_the_point_has_its_own_voxel():
    # row 1 was given a voxel by the nearest fill: not a measurement (log odds 0); row 0: log(0.8 / 0.2)
    probabilities = torch.tensor([[0.2, 0.8], [0.3, 0.7], [0.9, 0.1]])
    (pred,) = mos_predictions(_unmapped_batch(), probabilities, torch.ones(3, dtype=torch.bool), return_log_odds=True)
    assert pred["measured"].tolist() == [True, False, True]
    assert pred["log_odds"][1] == 0.0 and pred["log_odds"][0] == pytest.approx(np.log(4.0))
    assert pred["moving"].tolist() == [1, 1]
