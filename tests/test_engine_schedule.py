"""LR schedules on hand-checked values; gradient clipping; EMA; to_device; samplers and the seeded dataset."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pc3d.engine.data import EpochBatchSampler, Item, SeededDataset, ShardSampler, to_device
from pc3d.engine.ema import ModelEMA
from pc3d.engine.optim import clip_gradients, param_groups
from pc3d.engine.schedule import OneCycle, WarmupCosine, WarmupExponential, WarmupStep
from pc3d.engine.seeding import sample_seed
from pc3d.errors import ConfigError


def _lrs(make, total, momentum=False):
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0, betas=(0.9, 0.999))
    sched = make(opt, total)
    lrs, moms = [], []
    for _ in range(total + 1):
        lrs.append(opt.param_groups[0]["lr"])
        moms.append(opt.param_groups[0]["betas"][0])
        sched.step()
    return (lrs, moms) if momentum else lrs


def test_warmup_then_cosine():
    lrs = _lrs(lambda o, t: WarmupCosine(o, t, warmup_steps=10, warmup_start_factor=0.1, min_lr_ratio=0.0), 100)
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[5] == pytest.approx(0.55)          # halfway up the linear warm-up
    assert lrs[10] == pytest.approx(1.0)          # peak at the end of warm-up
    assert lrs[55] == pytest.approx(0.5)          # cosine halfway
    assert lrs[100] == pytest.approx(0.0, abs=1e-12)
    assert lrs[32] == pytest.approx((1 + math.cos(math.pi * 22 / 90)) / 2)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:11], strict=True))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))


def test_warmup_ratio_and_min_lr():
    lrs = _lrs(lambda o, t: WarmupCosine(o, t, warmup_ratio=0.1, warmup_start_factor=0.0, min_lr_ratio=0.1), 50)
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(1.0) and lrs[50] == pytest.approx(0.1)


def test_step_schedule():
    lrs = _lrs(lambda o, t: WarmupStep(o, t, milestones=(0.5, 0.75), gamma=0.1), 100)
    assert lrs[0] == lrs[49] == 1.0
    assert lrs[50] == pytest.approx(0.1) and lrs[74] == pytest.approx(0.1)
    assert lrs[75] == pytest.approx(0.01)


def test_exponential_schedule_spreads_a_per_epoch_decay_over_the_steps():
    # 60 epochs of x0.99 (4DMOS): 0.99 ** 60 = 0.5472 at the end; after a 10-step warm-up, step 10 + 45 of the
    # 90 left is halfway, sqrt(0.5472) = 0.7397
    lrs = _lrs(lambda o, t: WarmupExponential(o, t, warmup_steps=10, final_ratio=0.99 ** 60), 100)
    assert lrs[10] == pytest.approx(1.0) and lrs[55] == pytest.approx(0.7397, abs=1e-4)
    assert lrs[100] == pytest.approx(0.5472, abs=1e-4)
    assert all(a > b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    with pytest.raises(ConfigError, match="final_ratio"):
        WarmupExponential(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 10, final_ratio=0.0)


def test_one_cycle_lr_and_momentum():
    lrs, moms = _lrs(lambda o, t: OneCycle(o, t, pct_start=0.4, div_factor=10, final_div_factor=1e4), 100, True)
    assert lrs[0] == pytest.approx(0.1) and lrs[20] == pytest.approx(0.55) and lrs[40] == pytest.approx(1.0)
    assert lrs[70] == pytest.approx((1.0 + 1e-5) / 2) and lrs[100] == pytest.approx(1e-5)
    assert moms[0] == pytest.approx(0.95) and moms[40] == pytest.approx(0.85) and moms[100] == pytest.approx(0.95)


def test_schedule_resumes_exactly_and_rejects_bad_settings():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    a = WarmupCosine(opt, 20, warmup_steps=3)
    for _ in range(7):
        a.step()
    lr = opt.param_groups[0]["lr"]
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    b = WarmupCosine(opt2, 20, warmup_steps=3)
    b.load_state_dict(a.state_dict())
    assert opt2.param_groups[0]["lr"] == lr
    with pytest.raises(ConfigError):
        WarmupCosine(opt, 10, warmup_steps=10)
    with pytest.raises(ConfigError):
        WarmupStep(opt, 10, milestones=(5,))


def test_param_groups_exempt_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    decay, no_decay = param_groups(model)
    assert [p.shape for p in decay["params"]] == [(4, 3)]
    assert len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0.0


def test_ema_tracks_and_ramps():
    model = torch.nn.Linear(2, 1)
    ema = ModelEMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    before = ema.model.weight.clone()
    ema.update(model)
    torch.testing.assert_close(ema.model.weight, 0.5 * before + 0.5)
    assert ModelEMA(model, 0.9, warmup_steps=10).current_decay() == 0.0


def test_to_device_moves_tensors_only():
    class Movable:
        def to(self, device):
            return ("moved", str(device))

    batch = {"a": torch.ones(2), "b": [np.zeros(3), "x", 3], "c": (torch.zeros(1),), "s": Movable()}
    out = to_device(batch, torch.device("meta"))
    assert out["a"].device.type == "meta" and out["c"][0].device.type == "meta"
    assert out["b"][0] is batch["b"][0] and out["b"][1:] == ["x", 3]
    assert out["s"] == ("moved", "meta")


def test_samplers_shard_like_one_process():
    one = EpochBatchSampler(10, 4, seed=3, rank=0, world_size=1)
    two = [EpochBatchSampler(10, 2, seed=3, rank=r, world_size=2) for r in range(2)]
    for s in (one, *two):
        s.set_epoch(1)
    first = [item.index for item in next(iter(one))]
    shards = [[item.index for item in next(iter(s))] for s in two]
    assert sorted(first) == sorted(shards[0] + shards[1])
    seeds_one = {i: (seed, epoch) for i, seed, epoch in next(iter(one))}
    seeds_two = {i: (seed, epoch) for i, seed, epoch in next(iter(two[0])) + next(iter(two[1]))}
    assert seeds_one == seeds_two                   # augmentation seeds depend on (seed, epoch, index) only
    assert {epoch for _, epoch in seeds_one.values()} == {1}
    one.set_epoch(1, start_batch=1)
    assert len(list(one)) == len(one) - 1
    assert [i for s in (ShardSampler(5, rank=r, world_size=2) for r in range(2)) for i, _, _ in s] == [0, 2, 4, 1, 3]


def test_one_cycle_rise_is_int_of_pct_start_times_steps():
    # 0.35 * 10 = 3.5 -> 3 rise steps (OpenPCDet / fastai int(), not round()), so step 3 is the peak
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = OneCycle(opt, 10, pct_start=0.35, div_factor=10, final_div_factor=1e4)
    for _ in range(3):
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1.0)
    assert opt.param_groups[0]["betas"][0] == pytest.approx(0.85)


def test_clip_gradients_clips_the_euclidean_norm():
    # grad (3, 4) has L2 norm 5 (L1 7); clipped to 1 it becomes (0.6, 0.8)
    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([3.0, 4.0])
    norm = clip_gradients([p], 1.0)
    assert float(norm) == pytest.approx(5.0)
    assert torch.allclose(p.grad, torch.tensor([0.6, 0.8]), atol=1e-5)
    assert clip_gradients([p], None) is None


def test_a_samples_seed_changes_with_the_epoch():
    # augmentation differs from epoch to epoch: seed = sample_seed(seed, epoch, index)
    sampler = EpochBatchSampler(4, 4, shuffle=False, seed=7)
    seeds = {}
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        (batch,) = list(sampler)
        seeds[epoch] = [item.seed for item in batch]
        assert seeds[epoch] == [sample_seed(7, epoch, i) for i in range(4)]
    assert all(a != b for a, b in zip(seeds[0], seeds[1], strict=True))


def test_seeded_dataset_tells_the_dataset_epoch_zero_too():
    # a fresh dataset's epoch starts at 0 anyway; one handed over at another epoch (a second run on the same
    # object) must be told epoch 0 for epoch 0's items
    class Recorder(torch.utils.data.Dataset):
        epoch = 5

        def __len__(self):
            return 1

        def set_epoch(self, epoch):
            self.epoch = epoch

        def __getitem__(self, index):
            return self.epoch

    assert SeededDataset(Recorder()).__getitems__([Item(0, 1, 0)]) == [0]


@pytest.mark.parametrize(("num_samples", "world_size"), [(5, 2), (1, 3), (2, 5), (7, 3)])
def test_the_sampler_pads_every_rank_as_distributed_sampler_does(num_samples, world_size):
    """Without shuffling each rank gets what torch's DistributedSampler gives it, also when the world is more than
    twice the dataset (the padding then repeats the order more than once); every rank the same count."""
    from torch.utils.data import DistributedSampler

    for rank in range(world_size):
        ours = EpochBatchSampler(num_samples, 1, shuffle=False, rank=rank, world_size=world_size)
        theirs = DistributedSampler(range(num_samples), num_replicas=world_size, rank=rank, shuffle=False)
        batches = list(ours)
        assert len(batches) == len(ours) == len(theirs)
        assert [item.index for batch in batches for item in batch] == list(theirs)
