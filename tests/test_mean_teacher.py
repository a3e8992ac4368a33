"""The mean teacher on simulated SemanticKITTI frames: labelled / unlabelled frames from a frame list, the
student's second view, one training step, and pseudo labels that never read an unlabelled frame's labels."""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from pc3d.data import SemanticKittiDataset
from pc3d.data.batch import mirrored
from pc3d.data.frame_selection import write_frame_list
from pc3d.data.transforms import GlobalRotation, GlobalScaling
from pc3d.data.transforms.views import SecondView
from pc3d.engine.runner import init_weights
from pc3d.errors import CheckpointError, ConfigError, DataFormatError
from pc3d.models.backbones3d.unet import SparseUNet
from pc3d.models.segmentors import SparseSegmentor
from pc3d.models.semi import MeanTeacherSegmentor
from pc3d.models.semi.mean_teacher import FLIPS
from pc3d.sim.api import simulate_dataset
from pc3d.voxel import DynamicVoxelizer

RANGE = [-19.2, -19.2, -3.2, 19.2, 19.2, 3.2]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = tmp_path_factory.mktemp("skitti")
    simulate_dataset("semantickitti", path, frames=4, seed=0, columns=512, sequence_length=4)
    write_frame_list(path / "labelled.txt", [(0, 1)])
    return path


def dataset(root, **options):
    views = [GlobalRotation(0.3), SecondView([GlobalRotation(0.5), GlobalScaling((0.9, 1.1))])]
    return SemanticKittiDataset(root, sequences=[0], training=True, seed=0, augmentations=views,
                                voxelizer=DynamicVoxelizer([0.4, 0.4, 0.4], RANGE), **options)


def model(**options):
    torch.manual_seed(0)
    unet = partial(SparseUNet, channels=(8, 16), enc_depths=(1,), dec_channels=(16,), dec_depths=(1,))
    return MeanTeacherSegmentor(SparseSegmentor(4, unet, num_classes=20, ignore_index=0), keep=0.5, **options)


def test_frame_lists_mark_or_keep_the_labelled_frames(root):
    marked = dataset(root, labelled_frames=root / "labelled.txt")
    assert len(marked) == 4 and marked.unlabelled == {("00", "000000"), ("00", "000002"), ("00", "000003")}
    assert [marked.frame_id(i) for i in range(4)] == ["00/000001", "00/000000", "00/000002", "00/000003"]
    sample = marked[1]
    assert sample["metadata"]["labelled"] is False and (sample["point_labels"] == 0).all()
    assert sample["points2"].shape == sample["points"].shape and not np.allclose(sample["points2"], sample["points"])
    assert marked[0]["metadata"].get("labelled", True) and (marked[0]["point_labels"] > 0).any()
    repeated = dataset(root, labelled_frames=root / "labelled.txt", labelled_repeat=3)
    assert [repeated.frame_id(i) for i in range(4)] == ["00/000001"] * 3 + ["00/000000"] and len(repeated) == 6
    only = dataset(root, labelled_frames=root / "labelled.txt", labelled_only=True)
    assert [only.frame_id(i) for i in range(len(only))] == ["00/000001"]
    write_frame_list(root / "elsewhere.txt", [(5, 0)])
    with pytest.raises(DataFormatError, match="elsewhere.txt"):
        dataset(root, labelled_frames=root / "elsewhere.txt")


def test_second_view_must_keep_every_point():
    from pc3d.data.transforms import RandomDrop

    with pytest.raises(ConfigError, match="keep every point"):
        SecondView([RandomDrop(0.5)])({"points": np.zeros((100, 4), np.float32)}, np.random.default_rng(0))


def test_a_student_view_that_lost_its_rows_is_refused(root):
    """points2 must be the points row by row: a transform after SecondView that drops rows of points2 only is
    a DataFormatError naming the frame, not a step on mismatched rows."""
    def drop_first_row_of_points2(sample, rng):
        return {**sample, "points2": sample["points2"][1:]}

    data = dataset(root, labelled_frames=root / "labelled.txt", transforms=[drop_first_row_of_points2])
    with pytest.raises(DataFormatError, match="00/000001: points2 has"):
        model().train()(data.collate_fn([data[0], data[1]]))


MODES = {"ce": {}, "segmentor": {"pseudo_loss": "segmentor"}, "laser_mix": {"mix_weight": 1.0},
         "flips": {"teacher_flips": True, "point_cloud_range": RANGE}}


def step(root, **options) -> dict:
    data = dataset(root, labelled_frames=root / "labelled.txt")
    batch = data.collate_fn([data[0], data[1]])
    net = model(**options).train()
    torch.manual_seed(0)  # the mixes' area counts
    out = net(batch)
    out["loss"].backward()
    return out


@pytest.mark.parametrize("mode", MODES)
def test_one_step_trains_the_student_and_uses_pseudo_labels(root, mode):
    out = step(root, **MODES[mode])
    assert torch.isfinite(out["loss"]) and out["loss_pseudo"] > 0 and 0 < out["pseudo_share"] < 1
    assert out["alpha"] == 0.0  # at the first step the teacher is the student
    assert ("loss_mix" in out) == (mode == "laser_mix") and torch.isfinite(out.get("loss_mix", torch.zeros(())))


@pytest.mark.parametrize("mode", MODES)
def test_pseudo_labels_never_read_an_unlabelled_frames_labels(root, tmp_path, mode):
    before = step(root, **MODES[mode])
    label_file = root / "sequences" / "00" / "labels" / "000000.label"
    original = label_file.read_bytes()
    try:  # scramble the unlabelled frame's labels: nothing may change
        raw = np.frombuffer(original, np.uint32)
        label_file.write_bytes(np.random.default_rng(1).permutation(raw).astype(np.uint32).tobytes())
        after = step(root, **MODES[mode])
    finally:
        label_file.write_bytes(original)
    for key in ("loss", "loss_sup", "loss_pseudo", "pseudo_share", *(("loss_mix",) if "loss_mix" in before else ())):
        assert torch.equal(before[key], after[key]), key


def test_eval_predicts_with_the_teacher(root):
    data = dataset(root)
    data.training = False
    batch = data.collate_fn([data[2]])
    net = model().eval()
    with torch.no_grad():
        torch.nn.init.zeros_(net.student.head.classifier[1].weight)  # only the student changes
        ours = net(batch)[0]["pred_labels"]
        teachers = net.teacher(batch)[0]["pred_labels"]
    assert np.array_equal(ours, teachers)


def test_pseudo_label_confusion_scores_the_teacher_against_labels_it_does_not_read(root):
    """tools/pseudo_quality.py's counts: every point inside a voxel once in the teacher's row sum, the hard-labelled
    ones a part of them; scrambling the labels moves the rows and leaves the teacher's columns as they were."""
    data = dataset(root, labelled_frames=root / "labelled.txt")
    net = model().train()
    net(data.collate_fn([data[0], data[1]]))  # one step: a prior fit on the labelled frame
    net.eval()
    every_label = dataset(root)
    every_label.training = False
    batch = every_label.collate_fn([every_label[2], every_label[3]])
    everything, hard = net.pseudo_label_confusion(batch)
    inside = batch["point_to_voxel"] >= 0
    assert everything.sum() == inside.sum() and 0 < hard.sum() < everything.sum() and (hard <= everything).all()
    assert torch.equal(everything.sum(1), torch.bincount(batch["point_labels"][inside], minlength=20))
    assert everything[1:].sum() > 0.5 * everything.sum()  # the frames' own labels, not the ignored class
    scrambled = batch | {"point_labels": batch["point_labels"][torch.randperm(len(inside))]}
    everything2, hard2 = net.pseudo_label_confusion(scrambled)
    assert torch.equal(everything2.sum(0), everything.sum(0)) and torch.equal(hard2.sum(0), hard.sum(0))
    assert not torch.equal(everything2, everything)


def test_the_reflectivity_prior_travels_in_the_state_dict(root):
    """A resumed run goes on with the prior it had: its sums are buffers of the model."""
    data = dataset(root, labelled_frames=root / "labelled.txt")
    batch = data.collate_fn([data[0], data[1]])
    net = model().train()
    net(batch)
    state = net.state_dict()
    assert state["prior.histogram"].sum() > 0 and state["prior.band_count"].sum() > 0
    fresh = model()
    fresh.load_state_dict(state)
    points, remission = batch["points"][:, :3], batch["points"][:, 3]
    assert torch.equal(fresh.prior.likelihood(points, remission), net.prior.likelihood(points, remission))
    assert not torch.equal(model().prior.likelihood(points, remission), net.prior.likelihood(points, remission))


def test_ramp_is_zero_in_warm_up_then_rises_as_a_sigmoid_to_one():
    torch.manual_seed(0)
    unet = partial(SparseUNet, channels=(8, 16), enc_depths=(1,), dec_channels=(16,), dec_depths=(1,))
    net = MeanTeacherSegmentor(SparseSegmentor(4, unet, num_classes=20, ignore_index=0), warmup_steps=10,
                               rampup_steps=20)
    assert [net.ramp(s) for s in (0, 9)] == [0.0, 0.0]
    assert net.ramp(10) == pytest.approx(np.exp(-5.0)) and net.ramp(20) == pytest.approx(np.exp(-1.25))
    assert net.ramp(30) == net.ramp(1000) == 1.0
    assert model().ramp(0) == 1.0  # no warm-up, no ramp: the full weight from the first step
    with pytest.raises(ConfigError, match="warmup_steps"):
        MeanTeacherSegmentor(SparseSegmentor(4, unet, num_classes=20, ignore_index=0), warmup_steps=-1)


def test_warm_up_steps_train_on_labels_alone(root):
    """During warm-up the teacher does not run: the loss is the supervised one and no point gets a pseudo label."""
    data = dataset(root, labelled_frames=root / "labelled.txt")
    batch = data.collate_fn([data[0], data[1]])
    net = model()
    net.warmup_steps = 1
    out = net.train()(batch)
    assert out["ramp"] == 0 and out["pseudo_share"] == 0 and torch.equal(out["loss"], out["loss_sup"])
    assert net(batch)["ramp"] == 0  # a forward does not count: steps are the optimizer's (after_optimizer_step)
    net.after_optimizer_step()
    assert net(batch)["pseudo_share"] > 0  # the next step is past it


def test_the_teacher_moves_once_per_applied_optimizer_step(root, tmp_path):
    """train.accumulate=2: the step (alpha, warm-up, ramp-up) and the EMA advance once per optimizer step, not per
    micro-batch; a step the trainer skips (a NaN loss in its first micro-batch) leaves the teacher and the step as
    they were. The EMA after step n has alpha min(1 - 1 / (n + 1), 0.99)."""
    from pc3d.engine.settings import TrainSettings
    from pc3d.engine.trainer import Trainer

    data = dataset(root, labelled_frames=root / "labelled.txt")
    net = model(warmup_steps=100)  # labels alone: the EMA is all the teacher does
    losses, forward, seen = net.student.losses, net.forward, []

    def poisoned(batch, feats, cols):
        out = losses(batch, feats, cols)
        return out | {"loss": out["loss"] * float("nan")} if len(seen) == 3 else out

    def spy(batch):
        teacher = net.teacher.head.classifier[1].weight.detach().clone()
        seen.append((int(net.step), teacher))
        out = forward(batch)
        assert float(out["alpha"]) == pytest.approx(min(1 - 1 / (int(net.step) + 1), 0.99))
        return out

    net.student.losses, net.forward = poisoned, spy
    settings = TrainSettings(max_iters=3, batch_size=2, accumulate=2, log_interval=100, eval_interval=0,
                             ckpt_interval=0, tensorboard=False)
    trainer = Trainer(net, data, optimizer=partial(torch.optim.SGD, lr=0.5), settings=settings, run_dir=tmp_path,
                      seed=0)
    trainer.fit()
    assert trainer.step == 3 and trainer.skipped_steps == 1 and int(net.step) == 2
    assert [step for step, _ in seen] == [0, 0, 1, 1, 1, 1]  # step 2 (forwards 3, 4) skipped
    teachers = [teacher for _, teacher in seen]
    assert torch.equal(teachers[0], teachers[1]) and not torch.equal(teachers[1], teachers[2])
    assert all(torch.equal(teachers[2], t) for t in teachers[3:])  # the skipped step moved nothing


def test_init_from_a_supervised_run_puts_its_weights_in_student_and_teacher(tmp_path):
    """`init_from=<supervised run>`: the student and the teacher both start from its weights; the step and the
    prior start afresh. A mean teacher's own weights load as they are; another model's are refused by name."""
    torch.manual_seed(1)
    unet = partial(SparseUNet, channels=(8, 16), enc_depths=(1,), dec_channels=(16,), dec_depths=(1,))
    supervised = SparseSegmentor(4, unet, num_classes=20, ignore_index=0)
    torch.save(supervised.state_dict(), tmp_path / "supervised.pt")
    net = model()
    init_weights(net, tmp_path / "supervised.pt")
    for key, value in supervised.state_dict().items():
        assert torch.equal(net.student.state_dict()[key], value) and torch.equal(net.teacher.state_dict()[key], value)
    assert int(net.step) == 0 and net.prior.histogram.sum() == 0

    net.step += 7
    torch.save(net.state_dict(), tmp_path / "mean_teacher.pt")
    again = model()
    init_weights(again, tmp_path / "mean_teacher.pt")
    assert int(again.step) == 7 and torch.equal(again.teacher.head.classifier[1].weight,
                                                net.teacher.head.classifier[1].weight)

    wider = partial(SparseUNet, channels=(8, 32), enc_depths=(1,), dec_channels=(16,), dec_depths=(1,))
    torch.save(SparseSegmentor(4, wider, num_classes=20, ignore_index=0).state_dict(), tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt"):
        init_weights(model(), tmp_path / "other.pt")


def test_a_fixed_teacher_is_a_trained_run_that_labels_for_a_fresh_student(root, tmp_path):
    """teacher="fixed" (self-training): init_from puts the supervised run in the teacher only, training never
    changes it, and evaluation is the student's; without init_from the run refuses to start."""
    data = dataset(root, labelled_frames=root / "labelled.txt")
    batch = data.collate_fn([data[0], data[1]])
    with pytest.raises(ConfigError, match="init_from"):
        model(teacher="fixed").train()(batch)

    torch.manual_seed(1)
    unet = partial(SparseUNet, channels=(8, 16), enc_depths=(1,), dec_channels=(16,), dec_depths=(1,))
    supervised = SparseSegmentor(4, unet, num_classes=20, ignore_index=0)
    torch.save(supervised.state_dict(), tmp_path / "supervised.pt")
    net = model(teacher="fixed")
    init_weights(net, tmp_path / "supervised.pt")
    fresh = model(teacher="fixed").student.state_dict()
    for key, value in supervised.state_dict().items():
        assert torch.equal(net.teacher.state_dict()[key], value) and torch.equal(net.student.state_dict()[key],
                                                                                 fresh[key])
    optimizer = torch.optim.SGD(net.student.parameters(), lr=0.1)
    for _ in range(2):
        out = net.train()(batch)
        out["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
        assert out["alpha"] == 1.0 and out["pseudo_share"] > 0
    for key, value in supervised.state_dict().items():
        assert torch.equal(net.teacher.state_dict()[key], value), key
    assert not torch.equal(net.student.head.classifier[1].weight, fresh["head.classifier.1.weight"])

    data.training = False
    sample = data.collate_fn([data[2]])
    with torch.no_grad():
        net.eval()
        torch.nn.init.zeros_(net.student.head.classifier[1].weight)
        ours, students = net(sample)[0]["pred_labels"], net.student(sample)[0]["pred_labels"]
        teachers = net.teacher(sample)[0]["pred_labels"]
    assert np.array_equal(ours, students) and not np.array_equal(ours, teachers)
    with pytest.raises(ConfigError, match="teacher"):
        model(teacher="swa")


def test_a_mirrored_batch_holds_the_points_of_voxelizing_the_mirrored_scan(root):
    """mirrored() reflects the voxel coordinates in their grid: on this range, symmetric about the sensor, each
    point lands in the voxel that voxelizing the mirrored points puts it in; twice is the batch again."""
    data = SemanticKittiDataset(root, sequences=[0], training=False, voxelizer=DynamicVoxelizer([0.4, 0.4, 0.4], RANGE))
    sample = data[0]
    batch = data.collate_fn([sample])
    inside = batch["point_to_voxel"] >= 0
    for axes in FLIPS[1:]:
        ours = mirrored(batch, axes)
        flipped = dict(sample, points=sample["points"].copy())
        flipped["points"][:, list(axes)] *= -1
        theirs = data.collate_fn([flipped])
        assert torch.equal(ours["points"], theirs["points"])
        assert torch.equal(theirs["point_to_voxel"] >= 0, inside)
        same = (ours["voxel_coords"][batch["point_to_voxel"][inside]]
                == theirs["voxel_coords"][theirs["point_to_voxel"][inside]]).all(1)
        assert same.float().mean() > 0.999, axes  # a point on a cell boundary may round to either side
        again = mirrored(ours, axes)
        assert torch.equal(again["points"], batch["points"]) and torch.equal(again["voxel_coords"],
                                                                             batch["voxel_coords"])
    with pytest.raises(DataFormatError, match="axes"):
        mirrored(batch, (2,))


def test_a_flipped_teacher_needs_a_grid_symmetric_about_the_sensor():
    for grid in (None, [0.0, -19.2, -3.2, 38.4, 19.2, 3.2], [-19.2, -10.0, -3.2, 19.2, 19.2, 3.2]):
        with pytest.raises(ConfigError, match="point_cloud_range"):
            model(teacher_flips=True, point_cloud_range=grid)
    model(teacher_flips=False, point_cloud_range=[0.0, -19.2, -3.2, 38.4, 19.2, 3.2])  # no mirrors, no constraint


def test_a_flipped_teacher_answers_the_same_for_a_scan_and_its_mirror_image(root):
    """teacher_flips averages over the scan and its x, y and xy mirror images, a set that mirroring the scan
    maps onto itself: the probabilities of a scan and of its mirror image agree, and differ from one pass."""
    data = dataset(root)
    data.training = False
    batch = data.collate_fn([data[2]])
    inside = batch["point_to_voxel"] >= 0
    net = model(teacher_flips=True, point_cloud_range=RANGE).eval()
    with torch.no_grad():
        both = [net.point_probabilities(net.teacher, b, inside, net.flips) for b in (batch, mirrored(batch, (0,)))]
        once = net.point_probabilities(net.teacher, batch, inside)
    torch.testing.assert_close(both[0], both[1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(both[0], once, atol=1e-3)
