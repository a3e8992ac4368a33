"""Mean-teacher pieces of Less is More: EMA, range bands, the reflectivity prior, class-range thresholds and
pseudo targets, on crafted cases."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from pc3d.models.semi import (
    IGNORE,
    ReflectivityPrior,
    adjust,
    class_range_thresholds,
    ema_update,
    pseudo_targets,
    range_band,
)


def test_ema_alpha_schedule_and_update():
    teacher, student = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    nn.init.constant_(teacher.weight, 0.0)
    nn.init.constant_(student.weight, 1.0)
    student.num_batches_tracked += 7
    assert ema_update(teacher, student, step=0) == 0.0  # the first step copies the student
    assert torch.equal(teacher.weight, student.weight) and int(teacher.num_batches_tracked) == 7
    nn.init.constant_(teacher.weight, 0.0)
    assert ema_update(teacher, student, step=3) == pytest.approx(0.75)
    assert teacher.weight.tolist() == pytest.approx([0.25, 0.25])
    assert ema_update(teacher, student, step=10_000) == 0.99
    assert not teacher.weight.requires_grad or teacher.weight.grad is None


def test_range_bands():
    points = torch.tensor([[3.0, 4.0, 0.0], [0.0, 9.99, 1.0], [10.0, 0.0, 0.0], [60.0, 0.0, 0.0]])
    assert range_band(points, [0, 10, 20]).tolist() == [0, 0, 1, 2]


def test_reflectivity_prior_normalises_by_band_and_separates_classes():
    # class 1 reflects twice as much as class 2 at every range; far points return half as much
    near = torch.tensor([[5.0, 0.0]] * 4)
    far = torch.tensor([[25.0, 0.0]] * 4)
    labels = torch.tensor([1, 1, 2, 2])
    prior = ReflectivityPrior(3, edges=[0, 20], ignore_index=0, remission_bins=4, max_ratio=2.0)
    prior.update(near, torch.tensor([0.8, 0.8, 0.4, 0.4]), labels)
    prior.update(far, torch.tensor([0.4, 0.4, 0.2, 0.2]), labels)
    ratio = prior.normalised(torch.cat([near[:2], far[:2]]), torch.tensor([0.8, 0.4, 0.4, 0.2]))
    assert ratio.tolist() == pytest.approx([4 / 3, 2 / 3, 4 / 3, 2 / 3])  # band means 0.6 and 0.3
    lik = prior.likelihood(torch.cat([near[:1], far[:1]]), torch.tensor([0.8, 0.2]))
    assert lik[0, 1] > lik[0, 2] and lik[1, 2] > lik[1, 1]  # bright reads class 1, dim reads class 2
    prob = torch.tensor([[0.0, 0.5, 0.5], [0.0, 0.5, 0.5]])
    adjusted = adjust(prob, lik)
    assert adjusted.argmax(1).tolist() == [1, 2] and adjusted.sum(1).tolist() == pytest.approx([1, 1])
    assert prior.histogram[0].sum() == 0  # ignored labels never count


def test_class_range_thresholds_keep_the_same_share_of_every_cell():
    # class 0 near: confident (0.9..0.99); class 1 far: unsure (0.4..0.49). One global cut at 0.8 would
    # starve class 1; per-cell quantiles keep half of each.
    conf = torch.cat([torch.linspace(0.9, 0.99, 10), torch.linspace(0.4, 0.49, 10)])
    pred = torch.tensor([0] * 10 + [1] * 10)
    band = torch.tensor([0] * 10 + [1] * 10)
    tau = class_range_thresholds(conf, pred, band, num_classes=2, num_bands=2, keep=0.5)
    assert tau[0, 0] == pytest.approx(0.945) and tau[1, 1] == pytest.approx(0.445)
    assert torch.isinf(tau[0, 1]) and torch.isinf(tau[1, 0])  # no points there
    rest = (1 - conf) / 2
    prob = torch.stack([conf, rest, rest], 1)
    prob[10:] = torch.stack([rest, conf, rest], 1)[10:]  # the far points are predicted class 1
    assert prob.argmax(1).tolist() == pred.tolist()
    hard, soft = pseudo_targets(prob, band, class_range_thresholds(prob.max(1)[0], pred, band, 3, 2, 0.5),
                                soft_margin=0.02)
    assert (hard[:10] == 0).sum() == 5 and (hard[10:] == 1).sum() == 5 and (hard == IGNORE).sum() == 10
    assert ((hard == IGNORE) & (soft > 0)).sum() == 4  # 0.93, 0.94 and 0.43, 0.44: within 0.02 below the cut


def test_min_confidence_floors_every_cell_and_leaves_sure_cells_alone():
    # class 0: sure (0.95..0.99); class 1: a cell the teacher is unsure about as a whole (0.5..0.7), as parking
    # predicted on road. The quantile alone hands hard labels to class 1's better half; the floor does not.
    conf = torch.cat([torch.linspace(0.95, 0.99, 5), torch.linspace(0.5, 0.7, 5)])
    pred = torch.tensor([0] * 5 + [1] * 5)
    band = torch.zeros(10, dtype=torch.long)
    plain = class_range_thresholds(conf, pred, band, num_classes=2, num_bands=1, keep=0.6)
    floored = class_range_thresholds(conf, pred, band, num_classes=2, num_bands=1, keep=0.6, min_confidence=0.9)
    assert plain[1, 0] == pytest.approx(0.58) and floored[1, 0] == pytest.approx(0.9)
    assert floored[0, 0] == plain[0, 0] == pytest.approx(0.966)  # a sure cell keeps its own quantile
    prob = torch.stack([torch.where(pred == 0, conf, 1 - conf), torch.where(pred == 1, conf, 1 - conf)], 1)
    hard, soft = pseudo_targets(prob, band, floored, soft_margin=0.25)
    assert hard.tolist() == [IGNORE, IGNORE, 0, 0, 0] + [IGNORE] * 5
    assert (soft[5:] > 0).tolist() == [False, False, False, True, True]  # 0.65, 0.7: within 0.25 below 0.9


def test_ema_update_copies_buffers_that_count_data():
    """The teacher averages weights and norm statistics; a float buffer that sums data (the reflectivity prior's
    counts) is the student's, not a lagging mix of old and new counts."""
    teacher, student = (nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)) for _ in range(2))
    for model, value in ((teacher, 0.0), (student, 1.0)):
        model.register_buffer("counts", torch.full((3,), 10.0 * value, dtype=torch.float64))
        for p in model.parameters():
            nn.init.constant_(p, value)
        model[1].running_mean.fill_(value)
    ema_update(teacher, student, step=1)  # alpha 0.5
    assert teacher[0].weight.flatten().tolist() == pytest.approx([0.5] * 4)
    assert teacher[1].running_mean.tolist() == pytest.approx([0.5, 0.5])
    assert teacher.counts.tolist() == [10.0] * 3


def test_prior_smoothing_and_beta_by_hand():
    """One class-0 point of remission 0.5 in its band (mean 0.5: ratio 1, bin 1 of 4 over [0, 4)): add-one
    smoothing gives class 0 (1 + 1) / (1 + 4) = 2 / 5 there and the empty class 1 / 4; beta 2 squares the
    likelihoods: 0.5 * 0.2^2 : 0.5 * 0.4^2 = 0.2 : 0.8."""
    prior = ReflectivityPrior(2, edges=(0, 100), ignore_index=-1, remission_bins=4, max_ratio=4.0)
    prior.update(torch.tensor([[1.0, 0.0]]), torch.tensor([0.5]), torch.tensor([0]))
    likelihood = prior.likelihood(torch.tensor([[1.0, 0.0]]), torch.tensor([0.5]))
    assert likelihood.flatten().tolist() == pytest.approx([2 / 5, 1 / 4])
    adjusted = adjust(torch.tensor([[0.5, 0.5]]), torch.tensor([[0.2, 0.4]], dtype=torch.float64), beta=2.0)
    assert adjusted.flatten().tolist() == pytest.approx([0.2, 0.8])
