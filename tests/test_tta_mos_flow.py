"""Test-time augmentation of moving-object segmentation and scene flow (pc3d.models.tta): the whole scan window
or both clouds seen in each view, MOS probabilities averaged as a brute force averages them, InsMOS's boxes
fused, flow vectors taken back to the scan's frame, and the symmetry the views give the answer."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_insmos import RANGE as INSMOS_RANGE
from test_insmos import VOXEL as INSMOS_VOXEL
from test_insmos import make_batch as insmos_batch
from test_insmos import tiny_insmos
from test_mos_model import make_sample, tiny_model, voxelizer

from pc3d.data.batch import Collate
from pc3d.errors import ConfigError
from pc3d.models.contract import check_prediction
from pc3d.models.tta import TestTimeAugmented, View, view_batch, views
from pc3d.voxel import DynamicVoxelizer, TemporalVoxelizer

MIRROR_X = View(quarters=2, mirror=True)  # x -> -x


def seen_sample(sample: dict, view: View) -> dict:
    """The sample as the view sees it: its point coordinates (and a second cloud's) moved, the rest as it is."""
    out = dict(sample)
    for cloud in ("points", "points2"):
        if cloud in sample:
            out[cloud] = view.apply(torch.from_numpy(sample[cloud])).numpy()
    return out


def mos_brute_force(model, sample: dict, chosen: list[View]) -> np.ndarray:
    """Each view's window collated on its own, its (static, moving) probabilities summed over the views that map
    each point (unmapped rows are zero), the current scan moving where the sum says so."""
    total = 0  # a sum, not a mean: dividing a point's two probabilities by its count of views changes no flag
    for view in chosen:
        total = total + model.moving_probabilities(Collate(voxelizer())([seen_sample(sample, view)]))["probabilities"]
    n = sample["num_current_points"]
    return (total[:n, 1] > total[:n, 0]).to(torch.uint8).numpy()


def balanced(model, batch: dict):
    """The untrained tiny model with its head's moving bias set so that about half the voxels of `batch` say
    moving (left alone, every point is static and nothing is tested)."""
    from pc3d.data.batch import sparse_input

    model.eval()
    with torch.no_grad():
        logits = model.head(model.backbone(sparse_input(batch)).feats)
        model.head.bias[1] -= (logits[:, 1] - logits[:, 0]).median()
    return model


def mos_samples() -> list[dict]:
    return [make_sample(0, "00/000002"), make_sample(1, "00/000003", (100, 110, 70))]


def test_the_identity_view_alone_is_the_mos_model_itself():
    batch = Collate(voxelizer())(mos_samples())
    model = balanced(tiny_model(return_log_odds=True), batch)
    with torch.no_grad():
        plain = model(batch)
        once = TestTimeAugmented(model, voxelizer(), [View()])(batch)
    for a, b in zip(plain, once, strict=True):
        for key in ("moving", "point_labels", "log_odds", "measured"):
            np.testing.assert_array_equal(a[key], b[key])


def test_the_moving_flags_are_the_views_mean():
    """d4 x 2 scales over a window with current points outside the grid (each takes its nearest current voxel in
    each view); the log-odds are those of the mean probabilities."""
    samples = mos_samples()
    model = balanced(tiny_model(return_log_odds=True), Collate(voxelizer())(samples))
    chosen = views("d4", [0.9, 1.0])
    with torch.no_grad():
        got = TestTimeAugmented(model, voxelizer(), chosen)(Collate(voxelizer())(samples))
        for sample, pred in zip(samples, got, strict=True):
            want = mos_brute_force(model, sample, chosen)
            assert len(pred["moving"]) == sample["num_current_points"]
            assert np.mean(pred["moving"] == want) > 0.99  # sums in another order: float ties at most
            assert 0 < pred["moving"].mean() < 1
            check_prediction("mos", pred, sample["num_current_points"])
    plain = model(Collate(voxelizer())(samples))
    assert any(not np.array_equal(a["moving"], b["moving"]) for a, b in zip(plain, got, strict=True))


def test_flips_flag_a_window_and_its_mirror_image_alike():
    """The grid is symmetric about the sensor in x and y, so mirroring the window permutes the four flips: the
    augmented flags do not change where one pass's do."""
    sample = make_sample(2, "00/000004", (300, 200, 200))
    model = balanced(tiny_model(), Collate(voxelizer())([sample]))
    tta = TestTimeAugmented(model, voxelizer(), views("flips"))
    mirror = seen_sample(sample, MIRROR_X)
    with torch.no_grad():
        both = [tta(Collate(voxelizer())([s]))[0]["moving"] for s in (sample, mirror)]
        once = [model(Collate(voxelizer())([s]))[0]["moving"] for s in (sample, mirror)]
    assert np.mean(both[0] == both[1]) > 0.99
    assert np.mean(once[0] == once[1]) < 0.97


def test_insmos_boxes_are_fused_in_the_scan_frame():
    """InsMOS under the mirror views: moving flags for every current point, its boxes fused (in the scan's
    frame: the same boxes for the scan and its y mirror image, mirrored); the identity view is the model."""
    model = tiny_insmos().eval()
    batch = insmos_batch()
    with torch.no_grad():
        plain = model(batch)
        once = TestTimeAugmented(model, batch_voxelizer(), [View()])(batch)
        both = TestTimeAugmented(model, batch_voxelizer(), views("mirror"))(batch)
    for a, b, c in zip(plain, once, both, strict=True):
        for key in ("moving", "boxes", "scores", "labels"):
            np.testing.assert_array_equal(a[key], b[key])
        check_prediction("mos", c, len(a["moving"]))
        assert len(c["boxes"]) and len(c["moving"]) == len(a["moving"])


def batch_voxelizer() -> TemporalVoxelizer:
    """The voxelizer of test_insmos.make_batch."""
    return TemporalVoxelizer(INSMOS_VOXEL, INSMOS_RANGE, 0.1, [-0.25, 0.05], time_column=4)


FLOW_RANGE = [-8.0, -8.0, -2.0, 8.0, 8.0, 2.0]
SHIFT = np.array([0.3, 0.2, 0.0])  # the part of the toy flow that no view turns back


def flow_pair(seed: int, frame: str) -> dict:
    rng = np.random.default_rng(seed)
    p1 = rng.uniform([-6, -6, -1], [6, 6, 1], (200, 3)).astype(np.float32)
    p2 = (p1 + [0.5, -0.25, 0.0] + rng.normal(0, 0.02, p1.shape)).astype(np.float32)[rng.permutation(200)[:150]]
    return {"frame_id": frame, "points": p1, "points2": p2, "flow": np.zeros_like(p1), "seed": seed}


class ToyFlow(torch.nn.Module):
    """flow = (the mean of the second cloud's voxels' points - the mean of the first's) + SHIFT: the first part
    turns with any view (it reads the second cloud's own voxelization), SHIFT does not."""

    task = "flow"

    def forward(self, batch):
        out = []
        for b in range(batch["batch_size"]):
            rows = {suffix: slice(int(batch["point_offsets" + suffix][b]), int(batch["point_offsets" + suffix][b + 1]))
                    for suffix in ("", "2")}
            means = [batch["points" + s][r][batch["point_to_voxel" + s][r] >= 0, :3].double().mean(0).numpy()
                     for s, r in rows.items()]
            flow = means[1] - means[0] + SHIFT
            first = rows[""]
            out.append({"frame_id": batch["frame_id"][b], "flow": np.tile(flow, (first.stop - first.start, 1)).astype(
                np.float32), "flow_gt": batch["flow"][first].numpy(), "points": batch["points"][first, :3].numpy()})
        return out


def test_a_pair_is_voxelized_in_the_view_as_its_clouds_would_be():
    collate = Collate(DynamicVoxelizer([0.5] * 3, FLOW_RANGE))
    samples = [flow_pair(0, "a"), flow_pair(1, "b")]
    view = View(quarters=1, mirror=True, scale=0.9)
    got = view_batch(collate(samples), view, collate.voxelizer)
    want = collate([seen_sample(s, view) for s in samples])
    for key in ("points", "points2", "voxel_coords", "voxel_coords2", "point_to_voxel", "point_to_voxel2", "flow"):
        assert torch.equal(got[key], want[key]), key


def test_flow_comes_back_to_the_scan_frame_and_averages():
    """Over the flips the turning part of the toy flow comes back whole and SHIFT (x, y) averages to zero; with
    one view the flow is that view's, turned back; the identity alone is the model."""
    collate = Collate(DynamicVoxelizer([0.5] * 3, FLOW_RANGE))
    batch = collate([flow_pair(0, "a"), flow_pair(1, "b")])
    model = ToyFlow()
    plain = model(batch)
    flips = TestTimeAugmented(model, collate.voxelizer, views("flips"))(batch)
    for a, b in zip(plain, flips, strict=True):
        np.testing.assert_allclose(b["flow"], a["flow"] - SHIFT, atol=1e-5)
        np.testing.assert_array_equal(a["flow_gt"], b["flow_gt"])
        assert len(b["flow_gt"]) == len(b["flow"])  # the first cloud's ground truth, as the batch holds it
        check_prediction("flow", b, len(a["flow"]))
    quarter = View(quarters=1, scale=2.0)
    turned = TestTimeAugmented(model, collate.voxelizer, [quarter])(batch)
    inside = model(view_batch(batch, quarter, collate.voxelizer))  # that view's flow, in the view's frame
    for a, b, c in zip(inside, turned, plain, strict=True):
        np.testing.assert_allclose(b["flow"], a["flow"] @ np.linalg.inv(quarter.matrix).T, atol=1e-5)
        np.testing.assert_array_equal(b["points"], c["points"])  # the scan's own points, not the view's
    once = TestTimeAugmented(model, collate.voxelizer, [View()])(batch)
    for a, b in zip(plain, once, strict=True):
        np.testing.assert_array_equal(a["flow"], b["flow"])


def test_a_mos_model_without_probabilities_is_refused():
    class Flags(torch.nn.Module):
        task = "mos"

    with pytest.raises(ConfigError, match="Flags has no .*moving_probabilities"):
        TestTimeAugmented(Flags(), voxelizer(), views("flips"))
