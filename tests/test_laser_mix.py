"""LaserMix on voxels: areas of inclination, and mixes that take every voxel of a pair exactly once."""
from __future__ import annotations

import math

import pytest
import torch

from pc3d.errors import ConfigError
from pc3d.models.semi.laser_mix import concat_batches, inclination, inclination_areas, laser_mix
from pc3d.sparse import SparseTensor


def test_inclination_and_its_areas_by_hand():
    xyz = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 2.0], [3.0, 4.0, -5.0], [0.0, -1.0, -1.0]])
    assert torch.allclose(inclination(xyz), torch.tensor([0.0, math.pi / 4, -math.pi / 4, -math.pi / 4]))
    angle = torch.tensor([-0.4, -0.3, -0.1, 0.0, 0.2, 0.4])  # bands of width 0.8 / 4 = 0.2 from -0.4
    assert inclination_areas(angle, 4).tolist() == [0, 0, 1, 2, 3, 3]  # the top edge goes to the last band
    assert inclination_areas(angle, 2).tolist() == [0, 0, 0, 1, 1, 1]


def cloud(entry: int, angles: list[float], first_x: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Voxels of batch entry `entry` at 10 m, one per angle, at grid x = first_x, first_x + 1, ..."""
    feats = torch.tensor([[10.0, 0.0, 10.0 * math.tan(a), 0.5] for a in angles])
    coords = torch.tensor([[entry, 0, 0, first_x + i] for i in range(len(angles))], dtype=torch.int32)
    return feats, coords


def test_a_pair_swaps_alternate_areas_and_every_voxel_lands_once():
    fa, ca = cloud(0, [-0.3, -0.1, 0.1, 0.3], 0)   # entry 0: one voxel in each of 4 areas over [-0.3, 0.3]
    fb, cb = cloud(1, [-0.3, -0.1, 0.1, 0.3], 10)  # entry 1: the same angles at other sites
    fc, cc = cloud(2, [0.0], 20)                   # entry 2: in no pair
    x = SparseTensor(torch.cat([fa, fb, fc]), torch.cat([ca, cb, cc]), (1, 1, 32), 3)
    labels = torch.arange(9)
    mixed, mixed_labels = laser_mix(x, labels, [(0, 1)], [4])
    assert mixed.batch_size == 2
    first = mixed_labels[mixed.coords[:, 0] == 0].tolist()
    second = mixed_labels[mixed.coords[:, 0] == 1].tolist()
    assert sorted(first) == [0, 2, 5, 7]   # entry 0's areas 0 and 2, entry 1's areas 1 and 3
    assert sorted(second) == [1, 3, 4, 6]  # entry 1's areas 0 and 2, entry 0's areas 1 and 3
    assert torch.equal(mixed.feats[mixed_labels.argsort()], x.feats[:8])  # features travel with their voxel
    assert torch.equal(mixed.coords[mixed_labels.argsort(), 1:], x.coords[:8, 1:])


def test_a_site_both_scans_fill_across_an_areas_edge_is_kept_once():
    fa, ca = cloud(0, [-0.3, -0.01, 0.3], 0)       # the middle voxel just below the edge at 0 (2 areas)...
    fb, cb = cloud(1, [-0.3, 0.01, 0.3], 0)        # ... the other scan's, at the same site, just above it
    x = SparseTensor(torch.cat([fa, fb]), torch.cat([ca, cb]), (1, 1, 8), 2)
    mixed, mixed_labels = laser_mix(x, torch.arange(6), [(0, 1)], [2])
    sites = mixed.coords.tolist()
    assert len(sites) == len({tuple(s) for s in sites}) == 5   # one of the two middle voxels is dropped
    # mix 0: entry 0's low area (0, 1) and entry 1's high one (4 at the clashing site, 5): entry 0's voxel stays
    assert sorted(mixed_labels[mixed.coords[:, 0] == 0].tolist()) == [0, 1, 5]
    assert sorted(mixed_labels[mixed.coords[:, 0] == 1].tolist()) == [2, 3]  # the other way round, no clash


def test_concat_batches_puts_the_second_after_the_first():
    fa, ca = cloud(0, [0.1], 0)
    fb, cb = cloud(1, [0.2, 0.3], 0)
    both = concat_batches(SparseTensor(fa, ca, (1, 1, 4), 1), SparseTensor(torch.cat([fa, fb]), torch.cat([ca, cb]),
                                                                              (1, 1, 4), 2))
    assert both.batch_size == 3 and both.coords[:, 0].tolist() == [0, 1, 2, 2]
    assert torch.equal(both.feats, torch.cat([fa, fa, fb]))


def test_mix_settings_are_checked():
    from functools import partial

    from pc3d.models.backbones3d.unet import SparseUNet
    from pc3d.models.segmentors import SparseSegmentor
    from pc3d.models.semi import MeanTeacherSegmentor

    unet = partial(SparseUNet, channels=(8, 16), enc_depths=(1,), dec_channels=(16,), dec_depths=(1,))
    for options in ({"mix_weight": -1.0}, {"mix_areas": [1, 2]}, {"mix_areas": []}, {"pseudo_loss": "kl"}):
        with pytest.raises(ConfigError):
            MeanTeacherSegmentor(SparseSegmentor(4, unet, num_classes=20, ignore_index=0), **options)
