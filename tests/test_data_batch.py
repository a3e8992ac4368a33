"""The batch contract for several clouds and several scans: MOS and scene-flow keys through Collate,
per-cloud transforms, check_sample, and every voxelizer through Collate against its direct calls."""
from __future__ import annotations

import numpy as np
import pytest

from pc3d.data import Collate, check_sample, sparse_input
from pc3d.data.batch import CLOUDS, POINT_FIELDS, point_keys, select_points
from pc3d.data.transforms import (
    Compose,
    GlobalRotation,
    GlobalScaling,
    GlobalTranslation,
    PointJitter,
    PointShuffle,
    RandomDrop,
    RandomFlip,
    RangeCrop,
)
from pc3d.errors import DataFormatError
from pc3d.voxel import (
    CylindricalVoxelizer,
    DynamicPillarVoxelizer,
    DynamicVoxelizer,
    DynamicVoxels,
    HardCylindricalVoxelizer,
    HardTemporalVoxelizer,
    HardVoxelizer,
    HardVoxels,
    PillarVoxelizer,
    TemporalVoxelizer,
)

RANGE = (-10.0, -10.0, -3.0, 10.0, 10.0, 3.0)
SIZE = 0.5


def mos_sample(rng, n_per_scan=(300, 200, 250), name="0") -> dict:
    """A current scan then past scans, time in column 3 (0, -0.1, -0.2 s)."""
    frames = np.repeat(np.arange(len(n_per_scan)), n_per_scan)
    xyz = rng.uniform(-11, 11, (len(frames), 3)) * [1, 1, 0.3]
    time = (-0.1 * frames).astype(np.float32)
    return {"frame_id": name, "points": np.c_[xyz, time].astype(np.float32), "point_time": time,
            "point_frame": frames.astype(np.int64), "moving_labels": rng.integers(-1, 2, len(frames)),
            "point_labels": rng.integers(0, 3, len(frames)), "num_current_points": n_per_scan[0], "seed": 5}


def flow_sample(rng, n=400, name="0") -> dict:
    """points2 = points + flow row by row (so each row of points2 is where its point moved), labels
    as row identities, the backward flow on points2."""
    pc1 = rng.uniform(-9, 9, (n, 3)).astype(np.float32) * np.float32([1, 1, 0.3])
    flow = rng.normal(0, 0.5, (n, 3)).astype(np.float32)
    return {"frame_id": name, "points": pc1, "points2": pc1 + flow, "flow": flow, "flow2": -flow,
            "flow_mask": rng.random(n) < 0.9, "point_labels": np.arange(n), "point_labels2": np.arange(n),
            "seed": 3}


def test_mos_batch_keys():
    rng = np.random.default_rng(0)
    samples = [mos_sample(rng, (300, 200, 250), "a"), mos_sample(rng, (100, 150), "b")]
    for s in samples:
        check_sample(s)
    vox = TemporalVoxelizer(SIZE, RANGE, dt=0.1, time_range=(-0.25, 0.05))
    batch = Collate(vox)(samples)
    assert batch["num_current_points"].tolist() == [300, 100]
    for key in ("point_time", "point_frame", "moving_labels", "point_labels"):
        np.testing.assert_array_equal(batch[key].numpy(), np.concatenate([s[key] for s in samples]))
    coords, p2v = batch["voxel_coords"].numpy(), batch["point_to_voxel"].numpy()
    assert coords.shape[1] == 5 and batch["spatial_shape"] == (3, 12, 40, 40)
    hit = p2v >= 0
    # the time coordinate of each point's voxel is its scan's cell: 0.05 - 0.1 k lies in cell 2 - k
    np.testing.assert_array_equal(coords[p2v[hit], 1], 2 - batch["point_frame"].numpy()[hit])
    np.testing.assert_array_equal(coords[p2v[hit], 0], batch["point_batch"].numpy()[hit])
    offsets = batch["point_offsets"].numpy()
    for b, n_current in enumerate(batch["num_current_points"].tolist()):
        frames = batch["point_frame"].numpy()[offsets[b]:offsets[b + 1]]
        assert (frames[:n_current] == 0).all() and (frames[n_current:] > 0).all()
    assert sparse_input(batch).coords.shape[1] == 5


def test_transforms_keep_the_current_scan_first():
    sample = mos_sample(np.random.default_rng(1))
    out = Compose([PointShuffle(), RandomDrop(0.5), RangeCrop(RANGE), GlobalRotation(np.pi)])(
        sample, np.random.default_rng(2))
    check_sample(out)
    n = out["num_current_points"]
    assert 0 < n < 300 and (out["point_frame"][:n] == 0).all() and (out["point_frame"][n:] > 0).all()
    np.testing.assert_array_equal(out["point_time"], out["points"][:, 3])
    picked = select_points(dict(out), np.arange(len(out["points"]))[::-1])  # reversed: current still first
    assert picked["num_current_points"] == n and (picked["point_frame"][:n] == 0).all()


def voxel_contains(points, p2v, coords, point_batch, lower, size):
    """Each mapped point lies in its voxel (Cartesian (b, z, y, x)), in its own sample."""
    hit = p2v >= 0
    cell = np.floor((points[hit, :3] - np.float32(lower)) / np.float32(size)).astype(np.int64)
    np.testing.assert_array_equal(coords[p2v[hit], 1:][:, ::-1], cell)
    np.testing.assert_array_equal(coords[p2v[hit], 0], point_batch[hit])
    return hit


@pytest.mark.parametrize("vox", [DynamicVoxelizer(SIZE, RANGE), HardVoxelizer(SIZE, RANGE, 4, 5000, shuffle=True)])
def test_flow_batch_keys(vox):
    rng = np.random.default_rng(3)
    samples = [flow_sample(rng, 400, "a"), flow_sample(rng, 250, "b")]
    batch = Collate(vox)(samples)
    for suffix, cloud in (("", "points"), ("2", "points2")):
        assert batch[f"point_offsets{suffix}"].tolist() == [0, 400, 650]
        np.testing.assert_array_equal(batch[cloud].numpy(), np.concatenate([s[cloud] for s in samples]))
        hit = voxel_contains(batch[cloud].numpy(), batch[f"point_to_voxel{suffix}"].numpy(),
                             batch[f"voxel_coords{suffix}"].numpy(), batch[f"point_batch{suffix}"].numpy(),
                             RANGE[:3], SIZE)
        assert hit.mean() > 0.9
        in_voxels = int(batch[f"voxel_num_points{suffix}"].sum())
        assert in_voxels == hit.sum() if "voxels" not in batch else 0 < in_voxels <= hit.sum()
        assert sparse_input(batch, cloud=cloud).feats.shape == (len(batch[f"voxel_coords{suffix}"]), 3)
    for key in ("flow", "flow2", "flow_mask", "point_labels", "point_labels2"):
        np.testing.assert_array_equal(batch[key].numpy(), np.concatenate([s[key] for s in samples]))
    assert batch["spatial_shape2"] == batch["spatial_shape"]


def test_transform_chain_on_two_clouds():
    sample = flow_sample(np.random.default_rng(4), 2000)
    chain = Compose([RandomDrop(0.3), PointShuffle(), RangeCrop((-8, -8, -3, 8, 8, 3)), GlobalRotation(np.pi),
                     RandomFlip(["x", "y"], 1.0), GlobalScaling([0.8, 1.2]), GlobalTranslation(1.0)])
    out = chain(dict(sample), np.random.default_rng(5))
    check_sample(out)  # every point-wise key of each cloud kept its cloud's row count
    assert len(out["points"]) != len(out["points2"])  # the clouds were dropped / cropped independently
    # rows of both clouds with the same identity: transformed(pc1) + transformed(flow) = transformed(pc1 + flow)
    common, i1, i2 = np.intersect1d(out["point_labels"], out["point_labels2"], return_indices=True)
    assert len(common) > 500
    np.testing.assert_allclose(out["points"][i1] + out["flow"][i1], out["points2"][i2], atol=1e-4)
    np.testing.assert_allclose(out["points2"][i2] + out["flow2"][i2], out["points"][i1], atol=1e-4)
    np.testing.assert_array_equal(out["flow_mask"], sample["flow_mask"][out["point_labels"]])
    assert not np.allclose(out["flow"][i1], sample["flow"][common], atol=1e-3)  # the flow turned too
    jittered = PointJitter(0.01, 0.02)(dict(out), np.random.default_rng(0))
    for cloud in ("points", "points2"):
        assert 0 < np.abs(jittered[cloud] - out[cloud]).max() <= 0.02 + 1e-6


def full_sample(n: int = 50, n_current: int = 30) -> dict:
    """Two clouds of n points with every point-wise key of each (a multi-scan, scene-flow sample)."""
    frames = np.repeat([0, 1], [n_current, n - n_current]).astype(np.int64)
    values = {"point_labels": np.zeros(n, np.int64), "instance_ids": np.zeros(n, np.int64),
              "moving_labels": np.zeros(n, np.int64), "point_time": (-0.1 * frames).astype(np.float32),
              "point_frame": frames, "flow": np.zeros((n, 3), np.float32), "flow_mask": np.ones(n, bool)}
    sample = {"frame_id": "f", "num_current_points": n_current}
    for cloud, suffix in CLOUDS.items():
        sample[cloud] = np.zeros((n, 4), np.float32)
        sample.update({field + suffix: values[field] for field in POINT_FIELDS})
    return sample


@pytest.mark.parametrize("key", [k for cloud in CLOUDS for k in point_keys(cloud)[1:]])
def test_check_sample_rejects_wrong_rows(key):
    sample = full_sample()
    check_sample(sample)
    sample[key] = sample[key][:-1]
    with pytest.raises(DataFormatError, match=f"{key} has 49 rows for 50 points"):
        check_sample(sample)


def test_check_sample_rejects_bad_multi_scan_and_orphans():
    sample = mos_sample(np.random.default_rng(7), (30, 20))
    with pytest.raises(DataFormatError, match="num_current_points"):
        check_sample({**sample, "num_current_points": 51})
    with pytest.raises(DataFormatError, match="point_frame must be 0 on the first 20"):
        check_sample({**sample, "num_current_points": 20})
    with pytest.raises(DataFormatError, match="without their cloud"):
        check_sample({**sample, "point_labels2": np.zeros(5, np.int64)})
    with pytest.raises(DataFormatError, match="flow must be"):
        check_sample({**sample, "flow": np.zeros((50, 2), np.float32)})


def _direct(vox, samples) -> dict:
    """The voxel keys as Collate built them before voxelize(): one direct call per sample."""
    if isinstance(vox, DynamicVoxelizer | DynamicPillarVoxelizer | CylindricalVoxelizer | TemporalVoxelizer):
        dv = DynamicVoxels.concat([vox(s["points"], frame=s["frame_id"], batch_index=b)
                                   for b, s in enumerate(samples)])
        p2v = np.full(len(dv.keep), -1, np.int64)
        p2v[dv.keep] = dv.point_to_voxel
        return {"voxel_coords": dv.coords, "voxel_num_points": dv.voxel_counts, "point_to_voxel": p2v,
                "spatial_shape": dv.spatial_shape}
    hv = HardVoxels.concat([vox(s["points"], seed=s["seed"], frame=s["frame_id"], batch_index=b)
                            for b, s in enumerate(samples)])
    return {"voxels": hv.voxels, "voxel_num_points": hv.num_points, "voxel_coords": hv.coords,
            "point_to_voxel": hv.point_to_voxel, "spatial_shape": hv.spatial_shape}


VOXELIZERS = {
    "hard": HardVoxelizer(SIZE, RANGE, 3, 400, shuffle=True),
    "pillar": PillarVoxelizer(SIZE, RANGE, 4, 300),
    "dynamic": DynamicVoxelizer(SIZE, RANGE),
    "dynamic_pillar": DynamicPillarVoxelizer(SIZE, RANGE),
    "cylindrical": CylindricalVoxelizer((20, 36, 8), (0, 12), (-3, 3)),
    "hard_cylindrical": HardCylindricalVoxelizer((20, 36, 8), (0, 12), (-3, 3), 3, 500),
    "temporal": TemporalVoxelizer(SIZE, RANGE, 0.1, (-0.25, 0.05)),
    "hard_temporal": HardTemporalVoxelizer(SIZE, RANGE, 0.1, (-0.25, 0.05), 3, 600, shuffle=True),
}


@pytest.mark.parametrize("name", VOXELIZERS)
def test_collate_equals_direct_calls(name):
    vox = VOXELIZERS[name]
    rng = np.random.default_rng(8)
    samples = [mos_sample(rng, (300, 200), "a"), mos_sample(rng, (150, 100), "b")]
    samples[1]["seed"] = 11
    batch, direct = Collate(vox)(samples), _direct(vox, samples)
    assert set(direct) <= set(batch)
    for key, value in direct.items():
        got = batch[key] if key == "spatial_shape" else batch[key].numpy()
        np.testing.assert_array_equal(got, value, err_msg=key)


def _labelled(frame: str, n: int, seed: int, boxes: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    return {"frame_id": frame, "seed": seed, "points": rng.uniform(-5, 5, (n, 4)).astype(np.float32),
            "point_labels": rng.integers(0, 3, n), "instance_ids": np.array([0, 1, 2] * (n // 3) + [0] * (n % 3)),
            "gt_boxes": rng.uniform(0, 1, (boxes, 7)).astype(np.float32), "gt_labels": np.arange(1, boxes + 1)}


def test_mix3d_merges_pairs_of_samples_into_one_scene():
    samples = [_labelled("a", 6, 1), _labelled("b", 4, 2, boxes=2), _labelled("c", 5, 3)]
    batch = Collate(mix_prob=1.0)(samples)
    assert batch["batch_size"] == 2 and batch["frame_id"] == ["a+b", "c"]
    assert batch["point_offsets"].tolist() == [0, 10, 15]
    assert np.array_equal(batch["points"][:10].numpy(), np.concatenate([samples[0]["points"], samples[1]["points"]]))
    labels = samples[0]["point_labels"].tolist() + samples[1]["point_labels"].tolist()
    assert batch["point_labels"][:10].tolist() == labels
    assert batch["instance_ids"][:10].tolist() == [0, 1, 2, 0, 1, 2] + [0, 3, 4, 0]  # b's instances after a's two
    assert batch["num_gt"].tolist() == [3, 1] and batch["gt_boxes"][0, :, 7].tolist() == [1, 1, 2]
    assert Collate(mix_prob=0.0)(samples)["batch_size"] == 3
    with pytest.raises(DataFormatError, match="a\\+b: Mix3D needs gt_boxes in both"):
        Collate(mix_prob=1.0)([samples[0], {k: v for k, v in samples[1].items() if k not in ("gt_boxes", "gt_labels")}])
    window = {**samples[1], "num_current_points": 2}
    with pytest.raises(DataFormatError, match="not multi-scan windows"):
        Collate(mix_prob=1.0)([samples[0], window])


def test_mix3d_draw_is_seeded_by_the_batch_and_keeps_its_probability():
    collate = Collate(mix_prob=0.8)
    mixed = [collate([_labelled("a", 3, seed), _labelled("b", 3, seed + 1)])["batch_size"] == 1 for seed in range(400)]
    assert 0.74 < np.mean(mixed) < 0.86
    again = [collate([_labelled("a", 3, seed), _labelled("b", 3, seed + 1)])["batch_size"] == 1 for seed in range(400)]
    assert mixed == again
