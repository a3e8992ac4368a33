"""The trainer's weight EMA (pc3d.engine.ema.ModelEMA): parameters and norm layers' running statistics averaged,
counters and data statistics (a mean teacher's step and reflectivity prior, num_batches_tracked) copied."""
from __future__ import annotations

from functools import partial

import torch
from torch import nn

from pc3d.engine import ema as ema_module
from pc3d.engine.ema import ModelEMA
from pc3d.models.backbones3d.unet import SparseUNet
from pc3d.models.segmentors import SparseSegmentor
from pc3d.models.semi import MeanTeacherSegmentor

COPIED = ("step", "prior.band_sum", "prior.band_count", "prior.histogram")


def mean_teacher() -> MeanTeacherSegmentor:
    torch.manual_seed(0)
    unet = partial(SparseUNet, channels=(8, 16), enc_depths=(1,), dec_channels=(16,), dec_depths=(1,))
    return MeanTeacherSegmentor(SparseSegmentor(4, unet, num_classes=20, ignore_index=0))


def a_training_step(net: MeanTeacherSegmentor, gen: torch.Generator) -> None:
    """What a step changes, without running one: weights, BatchNorm statistics, the prior, the step."""
    with torch.no_grad():
        for p in net.student.parameters():
            p.add_(torch.randn(p.shape, generator=gen))
        for m in net.student.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.add_(1.0)
                m.num_batches_tracked += 1
    points = torch.rand(64, 3, generator=gen) * 40
    net.prior.update(points, torch.rand(64, generator=gen), torch.randint(1, 20, (64,), generator=gen))  # 0: ignored
    net.after_optimizer_step()


def test_the_ema_copies_a_mean_teachers_counters_and_prior_and_averages_its_weights():
    net = mean_teacher()
    ema = ModelEMA(net, decay=0.5)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        a_training_step(net, gen)
        before = {k: v.clone() for k, v in ema.model.state_dict().items()}
        ema.update(net)
    state, averaged = net.state_dict(), ema.model.state_dict()
    assert int(state["step"]) == 3 and state["prior.histogram"].sum() == 3 * 64
    for key in COPIED:
        assert torch.equal(averaged[key], state[key]), key
    tracked = [k for k in state if k.endswith("num_batches_tracked")]
    assert tracked and all(torch.equal(averaged[k], state[k]) for k in tracked)
    for key in ("student.head.classifier.1.weight", "student.backbone.stem.0.1.running_mean",
                "teacher.head.classifier.1.weight", "teacher.backbone.stem.0.1.running_mean"):
        torch.testing.assert_close(averaged[key], 0.5 * before[key] + 0.5 * state[key], msg=key)
        assert not torch.equal(averaged[key], state[key]), key

    # an EMA saved before counters were copied (its prior an average of the model's) loads, and the next update
    # puts the model's prior in it
    old = ema.state_dict()
    old["model"] = {k: v * 0.37 if k.startswith("prior.") else v for k, v in old["model"].items()}
    resumed = ModelEMA(net, decay=0.5)
    resumed.load_state_dict(old)
    assert resumed.updates == 3 and not torch.equal(resumed.model.prior.histogram, net.prior.histogram)
    a_training_step(net, gen)
    resumed.update(net)
    for key in COPIED:
        assert torch.equal(resumed.model.state_dict()[key], net.state_dict()[key]), key


def test_models_without_counters_average_as_before():
    """Parameters and BatchNorm statistics averaged, num_batches_tracked copied: bit for bit the rule of
    averaging every floating entry (YOLOv5's), on a model whose floating buffers are all norm statistics."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Sequential(nn.Linear(4, 2), nn.BatchNorm1d(2)))
    assert ema_module.averaged_keys(model) == {
        "0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
        "2.0.weight", "2.0.bias", "2.1.weight", "2.1.bias", "2.1.running_mean", "2.1.running_var"}
    ema = ModelEMA(model, decay=0.9, warmup_steps=3)
    reference = {k: v.clone() for k, v in ema.model.state_dict().items()}
    for _ in range(4):
        model.train()(torch.randn(8, 3)).sum().backward()
        with torch.no_grad():
            for p in model.parameters():
                p.sub_(0.1 * p.grad)
                p.grad = None
        ema.update(model)
        d = ema.current_decay()
        for key, value in model.state_dict().items():
            ref = reference[key]
            if ref.dtype.is_floating_point:
                ref.lerp_(value, 1.0 - d)
            else:
                ref.copy_(value)
    for key, value in ema.model.state_dict().items():
        assert torch.equal(value, reference[key]), key
    assert int(ema.model[1].num_batches_tracked) == 4
