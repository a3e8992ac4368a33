"""tools/infer.py at a dataset's root and across datasets: a root it cannot stream names the folder to pass
instead, and a segmentor writes its labels whatever the frames' ids (a SemanticKITTI model over a KITTI
object root once stopped at its first frame: "frame_id must be 'SS/NNNNNN'")."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import experiment_checkpoint

from pc3d.errors import DataFormatError
from pc3d.infer.sources import open_source
from pc3d.sim.api import simulate_dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import infer  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sim")
    simulate_dataset("kitti", root / "kitti", frames=2, seed=0, columns=512)
    simulate_dataset("waymo", root / "waymo", frames=2, seed=0, columns=512, sequence_length=2)
    simulate_dataset("scannet", root / "scannet", frames=1, seed=0)
    return root


def test_a_root_names_the_folder_to_pass(data):
    with pytest.raises(DataFormatError, match=r"a Waymo v2 root: pass a split folder \(.*waymo/training\)"):
        open_source(data / "waymo")
    with pytest.raises(DataFormatError, match=r"a ScanNet root: pass one scene folder, e\.g\. .*scans/scene0000_00"):
        open_source(data / "scannet")
    assert open_source(data / "waymo" / "training").kind == "waymo"
    assert open_source(data / "scannet" / "scans" / "scene0000_00").kind == "scannet"


def test_a_semantickitti_model_labels_a_kitti_root(data, tmp_path):
    from pc3d.data.semantickitti import read_label

    ckpt = experiment_checkpoint(tmp_path, "sim_semantickitti_seg")
    assert infer.main([str(ckpt), str(data / "kitti"), "--split", "train", "--out", str(tmp_path / "out")]) == 0
    frames = (data / "kitti" / "ImageSets" / "train.txt").read_text().split()
    for frame in frames:
        path = tmp_path / "out" / "labels" / "sequences" / "kitti" / "predictions" / f"{frame}.label"
        points = np.fromfile(data / "kitti" / "training" / "velodyne" / f"{frame}.bin", np.float32).reshape(-1, 4)
        assert len(read_label(path, len(points))) == len(points)


def test_a_kitti_root_is_read_as_its_dataset_reads_it(data, tmp_path):
    """The camera crop uses each frame's image_2 size (the simulator's 1224 x 370, not KITTI's usual 1242 x 375),
    and the split "test" reads testing/, as KittiDataset does: the same points as the evaluation's samples."""
    import shutil

    from pc3d.data import KittiDataset
    from pc3d.data.kitti import fov_mask

    root = tmp_path / "kitti"
    shutil.copytree(data / "kitti", root)
    test = root / "testing"
    for kind in ("velodyne", "calib", "image_2"):
        shutil.copytree(root / "training" / kind, test / kind)
    scan = np.fromfile(test / "velodyne" / "000000.bin", np.float32).reshape(-1, 4)
    (scan * np.float32([1, -1, 1, 1])).tofile(test / "velodyne" / "000000.bin")  # a test scan of its own
    (root / "ImageSets" / "test.txt").write_text("000000\n")
    for split in ("train", "test"):
        source, dataset = open_source(root, split=split), KittiDataset(root, split, fov_only=True)
        for i, frame_id in enumerate(dataset.frames):
            frame = source.read(frame_id)
            assert frame.extra["image_shape"] == dataset.image_shape(frame_id) == (370, 1224)
            seen = frame.points[fov_mask(frame.points, frame.calib, frame.extra["image_shape"])]
            np.testing.assert_array_equal(seen, dataset.load(i)["points"])


def test_a_folder_streams_its_scans_in_number_order(tmp_path):
    """Unpadded names: 2.npy comes before 10.npy, as the scans were taken (string order paired 1 with 10)."""
    for i in range(12):
        np.save(tmp_path / f"{i}.npy", np.full((3, 4), i, np.float32))
    assert [p.stem for p in open_source(tmp_path).items] == [str(i) for i in range(12)]


def test_a_source_reads_frames_as_the_run_was_trained(data):
    """The run's loader options reach the reader: a Waymo model trained on the first return only gets the first
    return at inference, a ScanNet model trained on unaligned scenes unaligned ones."""
    from pc3d.data import WaymoDataset

    segment = data / "waymo" / "training"
    both, first = open_source(segment, ("intensity", "elongation")), open_source(
        segment, ("intensity", "elongation"), loader={"returns": [1]})
    item = both.items[0]
    expected = WaymoDataset(data / "waymo", "training", returns=[1], labels=False).load(item)["points"]
    np.testing.assert_array_equal(first.read(item).points, expected)
    assert first.dataset.returns == (1,) and both.dataset.returns == (1, 2)  # this small world has no 2nd returns
    scene = data / "scannet" / "scans" / "scene0000_00"
    aligned, raw = open_source(scene, ("r", "g", "b")), open_source(scene, ("r", "g", "b"), loader={"align": False})
    assert not np.allclose(aligned.read(aligned.items[0]).points[:, :3], raw.read(raw.items[0]).points[:, :3])
