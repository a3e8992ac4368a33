"""Spiking sparse conv (E-3DSNN): the neuron, zero-row skipping in the engine, per-layer counts, the energy model
and the three networks."""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from torch import nn

import pc3d.sparse as sp
from pc3d.engine.evaluator import attach_measurements, measuring
from pc3d.errors import ConfigError
from pc3d.eval.energy import energy_summary, energy_table
from pc3d.eval.hooks import ClassificationEvaluator, EnergyReport
from pc3d.models.contract import check_prediction
from pc3d.models.snn import (
    MultiSpike,
    SpikeConv,
    SpikingBasicBlock,
    SpikingBlock,
    SpikingClassifier,
    SpikingFuse,
    SpikingUNet,
    SpikingVoxelResBackBone8x,
    multi_spike,
)
from pc3d.sparse import SparseTensor
from pc3d.sparse.ops import nonzero_rows


def spike_tensor(n_sites=400, channels=16, silent=0.7, shape=(12, 12, 12), batch=2, seed=0, dtype=torch.float32):
    """Spike counts 0..4 on random sites, `silent` of the rows all zero."""
    rng = np.random.default_rng(seed)
    flat = rng.choice(batch * int(np.prod(shape)), n_sites, replace=False)
    coords = np.stack(np.unravel_index(flat, (batch, *shape)), 1).astype(np.int32)
    spikes = rng.integers(0, 5, (n_sites, channels)).astype(np.float32)
    spikes[rng.random(n_sites) < silent] = 0
    return SparseTensor(torch.from_numpy(spikes).to(dtype), torch.from_numpy(coords), shape, batch)


# ------------------------------------------------------------------------------------------ neuron
def test_multi_spike_values_and_straight_through_gradient():
    x = torch.tensor([-1.0, 0.0, 0.3, 0.5, 0.7, 1.5, 2.5, 3.9, 4.0, 6.0], requires_grad=True)
    s = multi_spike(x)
    assert s.tolist() == [0, 0, 0, 0, 1, 2, 2, 4, 4, 4]  # round halves to even, clamp to 0..4
    s.sum().backward()
    assert x.grad.tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 0, 0]  # 1 on 0 < x < 4 only


def test_spike_counts_are_integers_in_0_to_4():
    s = MultiSpike()(torch.randn(1000, 8) * 5)
    assert torch.equal(s, s.round()) and s.min() >= 0 and s.max() <= 4
    assert set(s.unique().tolist()) == {0, 1, 2, 3, 4}


# ------------------------------------------------------------------------------- zero-row skipping
@pytest.mark.parametrize("kind", ["subm", "spconv"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_skipping_zero_rows_gives_bitwise_the_plain_outputs_and_gradients(kind, dtype):
    torch.manual_seed(0)
    x = spike_tensor(dtype=dtype)
    conv = (sp.SubMConv3d(16, 32, 3, padding=1, bias=False) if kind == "subm" else
            sp.SparseConv3d(16, 32, 3, stride=2, padding=1, bias=False))
    conv.weight.data = conv.weight.data.to(dtype)
    results = []
    for skip in (False, True):
        conv.skip_zero_rows = skip
        conv.weight.grad = None
        feats = x.feats.clone().requires_grad_(True)
        y = conv(x.replace_feature(feats))
        y.feats.backward(torch.randn(y.feats.shape, generator=torch.Generator().manual_seed(1)).to(dtype))
        results.append((y.feats.detach(), conv.weight.grad.clone(), feats.grad.clone()))
    bits = torch.int16 if dtype == torch.bfloat16 else torch.int32
    (out, grad_w, grad_x), (out_skip, grad_w_skip, grad_x_skip) = results
    assert torch.equal(out.view(bits), out_skip.view(bits))  # per output row the same sums in the same order
    assert torch.equal(grad_x.view(bits), grad_x_skip.view(bits))  # every row needs its gradient: full table
    # the weight gradient's register blocks regroup the remaining pairs: equal up to float32 rounding
    torch.testing.assert_close(grad_w_skip.float(), grad_w.float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_nonzero_rows_finds_rows_with_a_set_bit(dtype):
    feats = torch.tensor([[0.0, 0.0, 0.0], [0.0, 2.0, 0.0], [-0.0, 0.0, -0.0], [0.0, 0.0, 1e-30]]).to(dtype)
    assert nonzero_rows(feats).tolist() == [False, True, True, True]  # a -0.0 row is kept (only not skipped)


def test_a_spike_conv_skips_and_a_relu_or_encoding_conv_does_not():
    assert SpikeConv(4, 8).conv.skip_zero_rows
    assert not SpikeConv(4, 8, neuron=nn.ReLU).conv.skip_zero_rows
    assert not SpikeConv(4, 8, neuron=nn.Identity).conv.skip_zero_rows


# ---------------------------------------------------------------------------------- counts, energy
def line_tensor():
    """Sites (0, 0, 0), (0, 0, 1), (0, 0, 3) of one sample, two channels: spikes [1, 0], [0, 3], [0, 0]."""
    coords = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 3]], dtype=torch.int32)
    feats = torch.tensor([[1.2, 0.0], [0.0, 2.6], [0.4, 0.2]])
    return SparseTensor(feats, coords, (1, 1, 4), 1)


def test_two_layer_counts_by_hand():
    # layer 1: SubM 3^3, 2 -> 3, weights 1, no norm. Pairs: site 0 and 1 see each other, site 3 only itself: 5.
    # row spike totals 1, 3, 0: SOPs = 3 x (1 + 3 + 1 + 3 + 0) = 24; MACs = 5 pairs x 2 x 3 = 30.
    # its output is 4 on sites 0 and 1 (every channel), 0 on site 3, so layer 2 (3 -> 1) sees spikes 4, 4, 0
    # per channel: row totals 12, 12, 0; SOPs = 1 x (24 + 24 + 0) = 48; MACs = 5 x 3 x 1 = 15.
    net = sp.SparseSequential(SpikeConv(2, 3, 3, "a", padding=1, norm=None),
                              SpikeConv(3, 1, 3, "a", padding=1, norm=None))
    for layer in net:
        nn.init.ones_(layer.conv.weight)
    net.eval()
    net(line_tensor())
    assert all(layer.pop_measurements() is None for layer in net)  # outside measuring(): inference counts nothing
    with measuring(net):
        y = net(line_tensor())
    assert not net[0].measuring  # the flag is put back
    assert y.feats[:, 0].tolist() == [24.0, 24.0, 0.0]
    first, second = (layer.pop_measurements()[0] for layer in net)
    assert first == {"neurons": 6, "spikes": 4, "active": 2, "macs": 30, "sops": 24, "spiking": 1.0}
    assert second == {"neurons": 9, "spikes": 24, "active": 6, "macs": 15, "sops": 48, "spiking": 1.0}
    assert net[0].pop_measurements() is None  # handed over once

    summary = energy_summary([{"l1": first, "l2": second}])
    assert summary["sops_G"] == pytest.approx(72e-9) and summary["relu_macs_G"] == pytest.approx(45e-9)
    assert summary["energy_mJ"] == pytest.approx(0.9 * 72 * 1e-9)  # 64.8 pJ
    assert summary["relu_energy_mJ"] == pytest.approx(4.6 * 45 * 1e-9)  # 207 pJ
    assert summary["firing_rate"] == pytest.approx(28 / 15)
    assert summary["layers"]["l2"]["active_rate"] == pytest.approx(6 / 9)
    assert "| l1 | spikes |" in energy_table(summary)


def test_every_pass_inside_one_measuring_block_is_counted():
    """Test-time augmentation runs the network once per view: each pass adds its counts (the energy of what ran);
    the next measuring block starts from zero."""
    layer = SpikeConv(2, 3, 3, "a", padding=1, norm=None).eval()
    nn.init.ones_(layer.conv.weight)
    with measuring(layer):
        layer(line_tensor())
        layer(line_tensor())
    assert layer.pop_measurements()[0] == {"neurons": 12, "spikes": 8, "active": 4, "macs": 60, "sops": 48,
                                           "spiking": 1.0}
    with measuring(layer):
        layer(line_tensor())  # never popped: the next block does not add it
    with measuring(layer):
        layer(line_tensor())
    assert layer.pop_measurements()[0]["sops"] == 24


@pytest.mark.parametrize("backend", ["native", "spconv"])
def test_strided_and_inverse_counts_by_hand_on_either_backend(backend):
    # sites x = 0, 1, 3 of a (2, 2, 4) grid, spikes [1, 0], [0, 3], [0, 0]. Strided k2 s2 (2 -> 3, weights 1): coarse
    # site 0 reads x = 0, 1 and site 1 reads x = 3: 3 pairs, SOPs 3 x (1 + 3 + 0) = 12, MACs 3 x 2 x 3 = 18; its
    # output is 4 on site 0 (each channel), 0 on site 1. The inverse conv (3 -> 1) gives each fine site its coarse
    # site's row: 3 pairs, spikes 12, 12, 0: SOPs 24, MACs 3 x 3 x 1 = 9.
    if backend == "spconv":
        pytest.importorskip("spconv.pytorch")
    line = line_tensor()
    x = SparseTensor(line.feats, line.coords, (2, 2, 4), 1)
    net = sp.SparseSequential(SpikeConv(2, 3, 2, "d", stride=2, conv_type="spconv", norm=None),
                              SpikeConv(3, 1, 2, "d", conv_type="inverseconv", norm=None)).eval()
    for layer in net:
        nn.init.ones_(layer.conv.weight)
    sp.set_backend(backend)
    try:
        with measuring(net):
            y = net(x)
    finally:
        sp.set_backend("auto")
    assert y.feats[:, 0].tolist() == [12.0, 12.0, 0.0]
    strided, inverse = (layer.pop_measurements()[0] for layer in net)
    assert strided == {"neurons": 6, "spikes": 4, "active": 2, "macs": 18, "sops": 12, "spiking": 1.0}
    assert inverse == {"neurons": 6, "spikes": 12, "active": 3, "macs": 9, "sops": 24, "spiking": 1.0}


def test_an_encoding_layer_costs_macs_and_samples_are_counted_apart():
    x = spike_tensor(n_sites=60, channels=4, silent=0.0, batch=2)
    layer = SpikeConv(4, 8, neuron=nn.Identity, norm=None).eval()
    with measuring(layer):
        layer(x)
    per_sample = layer.pop_measurements()
    assert len(per_sample) == 2 and all(m["spiking"] == 0.0 for m in per_sample)
    assert sum(m["neurons"] for m in per_sample) == 60 * 4
    summary = energy_summary([{"enc": m} for m in per_sample])
    assert summary["sops_G"] == 0 and summary["macs_G"] == pytest.approx(summary["relu_macs_G"])
    assert summary["energy_mJ"] == pytest.approx(summary["relu_energy_mJ"])


# ------------------------------------------------------------------------------------------ networks
def shape_batch(n=2, points=300, seed=0):
    """A voxelized batch of random clouds with normals (x, y, z, nx, ny, nz), classes 0 and 1."""
    from pc3d.data.batch import Collate
    from pc3d.voxel import DynamicVoxelizer

    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        p = rng.standard_normal((points, 3))
        p /= np.linalg.norm(p, axis=1, keepdims=True) * (1 + i)
        samples.append({"frame_id": f"s{i}", "points": np.concatenate([p, p], 1).astype(np.float32), "label": i % 2})
    vox = DynamicVoxelizer(voxel_size=[0.1] * 3, point_range=[-1, -1, -1, 1, 1, 1])
    return Collate(vox)(samples)


def test_spiking_classifier_trains_and_predicts_with_energy():
    torch.manual_seed(0)
    batch = shape_batch()
    model = SpikingClassifier(in_channels=6, num_classes=2, widths=(8, 8, 16, 16), blocks=(1, 1, 1, 1))
    out = model(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad(), measuring(model):
        preds = model(batch)
    attach_measurements(model, preds)
    for p in preds:
        check_prediction("classification", p)
        assert len(p["measurements"]) == 3 + 4 + 2 * (1 + 1 + 1 + 1) + 1  # stem, downs, block convs, head
    metrics = EnergyReport(ClassificationEvaluator(2))(type("D", (), {"labels": np.array([0, 1])})(), preds)
    assert {"accuracy", "energy/mJ", "energy/relu_mJ", "energy/firing_rate"} <= set(metrics)
    assert 0 < metrics["energy/mJ"] and metrics["energy/relu_mJ"] > 0


def test_relu_twin_has_the_same_parameters():
    spiking = SpikingClassifier(widths="T")
    relu = SpikingClassifier(widths="T", neuron=nn.ReLU)
    assert [p.shape for p in spiking.parameters()] == [p.shape for p in relu.parameters()]
    assert 1.0e6 < sum(p.numel() for p in spiking.parameters()) < 2.5e6  # E-3DSNN-T: about 1.9 M


def test_spiking_unet_keeps_the_input_sites():
    torch.manual_seed(0)
    x = spike_tensor(n_sites=300, channels=4, silent=0.0, shape=(16, 16, 16), batch=2)
    net = SpikingUNet(in_channels=4, channels=(8, 16, 16, 32), enc_depths=(1, 1, 1), dec_channels=(16, 16, 8),
                      dec_depths=(1, 1, 1))
    y = net(x)
    assert torch.equal(y.coords, x.coords) and y.feats.shape == (300, net.out_channels)
    y.feats.square().mean().backward()


def test_spiking_detector_backbone_matches_the_voxel_backbone_convention():
    from pc3d.models.backbones3d.voxel_res_backbone import VoxelResBackBone8x

    x = spike_tensor(n_sites=500, channels=4, silent=0.0, shape=(41, 40, 40), batch=1)
    spiking = SpikingVoxelResBackBone8x(4, 32, channels=(8, 8, 16, 16))
    relu = VoxelResBackBone8x(4, 32, channels=(8, 8, 16, 16))
    out, stages = spiking.forward_features(x)
    assert set(stages) == {"x_conv1", "x_conv2", "x_conv3", "x_conv4"}
    assert out.spatial_shape == relu(x).spatial_shape == spiking.output_shape(x.spatial_shape)
    assert spiking.out_channels == 32


def test_spiking_block_residual_adds_pre_spike_values():
    block = SpikingBlock(4, indice_key="b", norm=partial(nn.BatchNorm1d, affine=False)).eval()
    for conv in (block.conv1.conv, block.conv2.conv):
        nn.init.zeros_(conv.weight)
    x = spike_tensor(n_sites=50, channels=4, silent=0.0).replace_feature(torch.randn(50, 4))
    assert torch.allclose(block(x).feats, x.feats)  # zero convs: the block is the identity on pre-spike values


def test_e3dsnn_as_released_has_its_parameter_count():
    """T at 40 classes, by hand: stem 6*16*27 + 2*16*16*27 = 16,416; stage i a kernel-2 down conv (8 offsets) and
    three SubM 3^3 convs: 16*16*8 + 3*16*16*27, 16*32*8 + 3*32*32*27, 32*64*8 + 3*64*64*27, 64*128*8 +
    3*128*128*27 = 1,850,624; BatchNorm weight and bias after each of the 19 convs: 2*(3*16 + 4*(16 + 32 + 64 + 128))
    = 2,016; head 128*40 + 40 = 5,160. The paper: 1.87 M."""
    model = SpikingClassifier(widths="T", blocks=(1, 1, 1, 1), block="basic", head="plain")
    assert sum(p.numel() for p in model.parameters()) == 16_416 + 1_850_624 + 2_016 + 5_160 == 1_874_216
    assert isinstance(model.head.neuron, nn.Identity)  # the head reads pre-spike values
    with pytest.raises(ConfigError, match="block must be one of"):
        SpikingClassifier(block="triple")


def test_spiking_basic_block_is_a_residual_spike_conv_then_a_spiking_block():
    torch.manual_seed(0)
    block = SpikingBasicBlock(4, indice_key="b", norm=partial(nn.BatchNorm1d, affine=False)).eval()
    x = spike_tensor(n_sites=60, channels=4, silent=0.0).replace_feature(3 * torch.randn(60, 4))
    y = block.conv(x)
    expected = block.block(y.replace_feature(y.feats + x.feats))
    assert torch.equal(block(x).feats, expected.feats)
    assert len([m for m in block.modules() if isinstance(m, SpikeConv)]) == 3


def test_plain_head_adds_its_bias_to_the_mean_and_basic_blocks_are_measured():
    torch.manual_seed(0)
    batch = shape_batch()
    model = SpikingClassifier(in_channels=6, num_classes=2, widths=(8, 8, 16, 16), blocks=(1, 1, 1, 1),
                              block="basic", head="plain").eval()
    with torch.no_grad():
        before = model.logits(batch)
        model.head_bias.copy_(torch.tensor([0.5, -2.0]))
        assert torch.allclose(model.logits(batch), before + torch.tensor([0.5, -2.0]))
        with measuring(model):
            preds = model(batch)
    attach_measurements(model, preds)
    assert len(preds[0]["measurements"]) == 3 + 4 + 3 * 4 + 1  # stem, downs, three convs per block, head


def test_e3dsnn_segmentation_network_as_released():
    """channels (64, 64, 128, 128, 256), by hand: stem 4*64*27 + 2*64*64*27 = 228,096; kernel-2 downs 8*(64*64 +
    64*128 + 128*128 + 128*256) = 491,520; two BasicBlocks per stage, 3 convs each: 6*27*(64^2 + 128^2 + 128^2 +
    256^2) = 16,588,800; inverse convs 4*8*256*256 = 2,097,152; fusion 256*(384 + 384 + 320 + 320) + 4*256*256 =
    622,592; BatchNorm weight and bias: 2*(3*64 + 576 + 6*576 + 4*256 + 8*256) = 14,592. Released: about 20 M."""
    net = SpikingUNet(in_channels=4, channels=(64, 64, 128, 128, 256), enc_depths=(2, 2, 2, 2),
                      dec_channels=(256,) * 4, dec_depths=(1,) * 4, stem="convs", block="basic", decoder="fuse")
    assert sum(p.numel() for p in net.parameters()) == (
        228_096 + 491_520 + 16_588_800 + 2_097_152 + 622_592 + 14_592) == 20_042_752
    with pytest.raises(ConfigError, match="dec_depths all 1"):
        SpikingUNet(decoder="fuse")


def test_spiking_fuse_adds_two_1x1_spike_convs_of_the_concatenation_to_the_up_part():
    torch.manual_seed(0)
    fuse = SpikingFuse(12, 8, indice_key="f", norm=partial(nn.BatchNorm1d, affine=False)).eval()
    x = spike_tensor(n_sites=40, channels=12, silent=0.0).replace_feature(3 * torch.randn(40, 12))
    expected = fuse.conv2(fuse.conv1(x)).feats + x.feats[:, :8]
    assert torch.equal(fuse(x).feats, expected)
    assert fuse.conv1.conv.kernel_size == (1, 1, 1) and fuse.conv1.conv.subm


def test_released_layout_spiking_unet_keeps_the_sites_and_is_measured():
    torch.manual_seed(0)
    x = spike_tensor(n_sites=300, channels=4, silent=0.0, shape=(16, 16, 16), batch=2)
    net = SpikingUNet(in_channels=4, channels=(8, 8, 16, 16), enc_depths=(1, 2, 1), dec_channels=(16, 16, 8),
                      dec_depths=(1, 1, 1), stem="convs", block="basic", decoder="fuse")
    y = net(x)
    assert torch.equal(y.coords, x.coords) and y.feats.shape == (300, 8) == (300, net.out_channels)
    y.feats.square().mean().backward()
    convs = [m for m in net.modules() if isinstance(m, SpikeConv)]
    assert len(convs) == 3 + 3 + 3 * (1 + 2 + 1) + 3 + 2 * 3  # stem, downs, basic blocks, inverse convs, fusions


def test_energy_counts_of_a_grouped_conv():
    # 2 input rows x 4 channels (spike totals 3 and 1), 3 active pairs, Cout 4 in 2 groups:
    # macs = 3 pairs x 4 x (4 / 2) = 24; sops = (3 + 1 + 1) x 2 = 10
    from pc3d.models.snn.blocks import conv_counts

    spikes = torch.tensor([[1.0, 2, 0, 0], [0, 0, 1, 0]])
    nbr = torch.tensor([[0, 1], [1, -1]])
    c = conv_counts(spikes, torch.tensor([0, 0]), nbr, torch.tensor([0, 0]), 1, 4, groups=2)
    assert c["macs"].tolist() == [24.0] and c["sops"].tolist() == [10.0]
    assert c["neurons"].tolist() == [8.0] and c["spikes"].tolist() == [4.0] and c["active"].tolist() == [3.0]


def test_spiking_classifier_logits_are_the_mean_of_the_heads_sites():
    # logits = mean over each sample's sites of the head's output (a 40-cell grid leaves 2^3 cells after the
    # four stride-2 stages: several sites per sample, so a sum would differ)
    from pc3d.data.batch import Collate
    from pc3d.voxel import DynamicVoxelizer

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    samples = []
    for i, n in enumerate((300, 80)):
        p = rng.standard_normal((n, 3))
        p /= np.linalg.norm(p, axis=1, keepdims=True) * (1 + i)
        samples.append({"frame_id": f"s{i}", "points": np.concatenate([p, p], 1).astype(np.float32), "label": i})
    batch = Collate(DynamicVoxelizer(voxel_size=[0.05] * 3, point_range=[-1, -1, -1, 1, 1, 1]))(samples)
    model = SpikingClassifier(in_channels=6, num_classes=2, widths=(8, 8, 16, 16), blocks=(1, 1, 1, 1),
                              neuron=nn.ReLU).eval()
    captured = {}
    model.head.register_forward_hook(lambda m, i, o: captured.setdefault("y", o))
    with torch.no_grad():
        logits = model.logits(batch)
    y = captured["y"]
    sample = y.coords[:, 0].long()
    assert (sample == 0).sum() > 1 and (sample == 1).sum() > 1  # with one site a sum is a mean
    for b in range(2):
        assert torch.allclose(logits[b], y.feats[sample == b].mean(0).float(), rtol=1e-3, atol=1e-12)  # tiny values
