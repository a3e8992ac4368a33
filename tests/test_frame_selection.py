"""ST-RFD frame selection against the uniform baseline, on synthetic trajectories."""
from __future__ import annotations

import numpy as np
import pytest

from pc3d.data.frame_selection import (
    budget,
    motion_coordinate,
    read_frame_list,
    select_frames,
    st_rfd_frames,
    uniform_frames,
    write_frame_list,
)
from pc3d.errors import ConfigError, DataFormatError


def trajectory(x: np.ndarray, yaw: np.ndarray | None = None) -> np.ndarray:
    """Poses [F, 4, 4] at positions (x, 0, 0) with headings yaw."""
    yaw = np.zeros_like(x) if yaw is None else yaw
    poses = np.tile(np.eye(4), (len(x), 1, 1))
    poses[:, 0, 0] = poses[:, 1, 1] = np.cos(yaw)
    poses[:, 1, 0], poses[:, 0, 1] = np.sin(yaw), -np.sin(yaw)
    poses[:, 0, 3] = x
    return poses


def test_motion_coordinate_counts_travel_and_turns():
    poses = trajectory(np.array([0.0, 1.0, 1.0, 3.0]), np.array([0.0, 0.0, 0.1, 0.1]))
    assert motion_coordinate(poses, metres_per_radian=10.0) == pytest.approx([0, 1, 2, 4])


def test_st_rfd_keeps_the_fraction_and_skips_a_stop():
    # 100 frames: drive 1 m per frame for 30, stand still for 40, drive again for 30
    x = np.concatenate([np.arange(30.0), np.full(40, 30.0), 30 + np.arange(1.0, 31.0)])
    poses = trajectory(x)
    kept = st_rfd_frames(poses, 0.1)
    assert len(kept) == budget(100, 0.1) == 10 and len(set(kept.tolist())) == 10
    in_stop = ((kept >= 30) & (kept < 70)).sum()
    assert in_stop <= 1  # the stop is one place: one frame at most
    assert ((uniform_frames(100, 0.1) >= 30) & (uniform_frames(100, 0.1) < 70)).sum() == 4  # uniform spends 4 there
    travel = np.sort(x[kept])
    assert np.diff(travel).min() >= 4.0  # spread over the travelled distance (6 m apart ideally)


def test_budget_and_degenerate_sequences():
    assert budget(7, 0.01) == 1 and budget(100, 1.0) == 100
    with pytest.raises(ConfigError, match="fraction"):
        budget(10, 0.0)
    still = trajectory(np.zeros(20))
    assert st_rfd_frames(still, 0.2).tolist() == uniform_frames(20, 0.2).tolist() == [2, 7, 12, 17]
    assert st_rfd_frames(trajectory(np.arange(5.0)), 1.0).tolist() == [0, 1, 2, 3, 4]


def test_frame_lists_round_trip_and_bad_lines_name_the_file(tmp_path):
    pairs = select_frames([(0, range(50), trajectory(np.arange(50.0))), (2, range(20), trajectory(np.arange(20.0)))],
                          0.1, method="uniform")
    assert pairs == [(0, 5), (0, 15), (0, 25), (0, 35), (0, 45), (2, 5), (2, 15)]  # every 10th of the 70 frames
    path = write_frame_list(tmp_path / "uniform_10.txt", pairs)
    assert path.read_text().splitlines()[0] == "00/000005"
    assert read_frame_list(path) == pairs
    bad = tmp_path / "bad.txt"
    bad.write_text("00/000001\n0x/12\n")
    with pytest.raises(DataFormatError, match="bad.txt.*line 2"):
        read_frame_list(bad)
    with pytest.raises(ConfigError, match="method"):
        select_frames([(0, range(5), trajectory(np.arange(5.0)))], 0.5, method="random")


def test_one_budget_over_sequences_goes_where_the_sensor_moves():
    moving, still = trajectory(np.arange(50.0)), trajectory(np.zeros(50))
    st_rfd = select_frames([(0, range(50), moving), (1, range(50), still)], 0.1)
    uniform = select_frames([(0, range(50), moving), (1, range(50), still)], 0.1, method="uniform")
    assert len(st_rfd) == len(uniform) == 10
    assert sum(seq == 1 for seq, _ in st_rfd) == 1 and sum(seq == 1 for seq, _ in uniform) == 5


def test_frames_are_named_by_scan_number_and_an_empty_sequence_adds_nothing():
    moving = trajectory(np.arange(10.0))
    assert motion_coordinate(np.zeros((0, 4, 4))).shape == (0,)
    for method in ("st_rfd", "uniform"):
        alone = select_frames([(1, range(10), moving)], 0.2, method)
        assert alone == [(1, 2), (1, 7)]  # the centres of two spans of 5 (1 m a frame: the same for st_rfd)
        empty = (0, [], np.zeros((0, 4, 4)))
        assert select_frames([empty, (1, range(10), moving)], 0.2, method) == alone
        assert select_frames([(1, range(10), moving), empty], 0.2, method) == alone
        assert select_frames([empty], 0.2, method) == []
        # the even scans 0..18 of a sequence (odd ones lost): frames 2 and 7 of the 10 present are scans 4 and 14
        assert select_frames([(1, range(0, 20, 2), moving)], 0.2, method) == [(1, 4), (1, 14)]
    with pytest.raises(ConfigError, match="3 scan numbers for 10 poses"):
        select_frames([(1, [0, 1, 2], moving)], 0.2)
    with pytest.raises(ConfigError, match="increasing"):
        select_frames([(1, [0, 1, 1], moving[:3])], 0.2)
    with pytest.raises(ConfigError, match="scan numbers, poses"):
        select_frames([(1, moving)], 0.2)


def test_the_tool_names_the_scans_on_disk(tmp_path):
    """A sequence whose odd scans are gone (a 5 Hz copy, lost scans): the lists name scans that exist, and a
    dataset trains on every listed frame."""
    import sys
    from pathlib import Path

    from pc3d.data import SemanticKittiDataset
    from pc3d.sim.api import simulate_dataset

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from select_frames import main

    simulate_dataset("semantickitti", tmp_path, frames=12, seed=0, columns=256, sequence_length=6)
    for scan in tmp_path.glob("sequences/*/velodyne/*.bin"):
        if int(scan.stem) % 2:
            scan.unlink()
            (scan.parent.parent / "labels" / f"{scan.stem}.label").unlink()
    assert main([str(tmp_path), "--sequences", "all", "--fraction", "0.5"]) == 0
    on_disk = {(int(p.parent.parent.name), int(p.stem)) for p in tmp_path.glob("sequences/*/velodyne/*.bin")}
    for method in ("st_rfd", "uniform"):
        listed = read_frame_list(tmp_path / "frame_lists" / f"{method}_50.txt")
        assert len(listed) == 3 and set(listed) <= on_disk, (method, listed)
        data = SemanticKittiDataset(tmp_path, sequences="all", training=True, labelled_only=True,
                                    labelled_frames=tmp_path / "frame_lists" / f"{method}_50.txt")
        assert sorted((int(s), int(n)) for s, n in data.frames) == sorted(listed)


def test_a_frame_list_naming_a_scan_the_dataset_lacks_is_refused(tmp_path):
    from pc3d.data import SemanticKittiDataset
    from pc3d.sim.api import simulate_dataset

    simulate_dataset("semantickitti", tmp_path, frames=4, seed=0, columns=256, sequence_length=4)
    write_frame_list(tmp_path / "gaps.txt", [(0, 1), (0, 7), (0, 2), (3, 0)])
    with pytest.raises(DataFormatError, match=r"gaps.txt: 2 of its 4 frames .*: 00/000007, 03/000000"):
        SemanticKittiDataset(tmp_path, sequences=[0], training=True, labelled_frames=tmp_path / "gaps.txt")


def test_select_frames_tool_writes_lists_a_dataset_reads(tmp_path, capsys):
    import sys
    from pathlib import Path

    from pc3d.data import SemanticKittiDataset
    from pc3d.sim.api import simulate_dataset

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from select_frames import main

    simulate_dataset("semantickitti", tmp_path, frames=8, seed=0, columns=256, sequence_length=4)
    assert main([str(tmp_path), "--sequences", "0", "1", "--fraction", "0.25"]) == 0
    assert "st_rfd: 2 of 8 frames" in capsys.readouterr().out
    for method in ("st_rfd", "uniform"):
        data = SemanticKittiDataset(tmp_path, sequences=[0, 1], labelled_frames=tmp_path / "frame_lists" /
                                    f"{method}_25.txt", labelled_only=True)
        assert len(data) == 2
    assert main([str(tmp_path), "--sequences", "all", "--fraction", "0.25", "--out", str(tmp_path / "all")]) == 0
    lists = (tmp_path / "all", tmp_path / "frame_lists")
    assert (lists[0] / "uniform_25.txt").read_text() == (lists[1] / "uniform_25.txt").read_text()
    assert SemanticKittiDataset(tmp_path, sequences="all").sequences == ["00", "01"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="no numbered sequence"):
        SemanticKittiDataset(tmp_path / "empty", sequences="all")


def _pose(yaw: float) -> np.ndarray:
    pose = np.eye(4)
    pose[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
    return pose


def test_a_heading_across_pi_is_a_small_turn_and_budgets_round():
    """Yaw 3.1 -> -3.1 turns by 2 pi - 6.2 = 0.083 rad (heading weighted 10 m per radian), not 6.2; and 10 % of 19
    frames is 2 (1.9 rounded), not 1."""
    motion = motion_coordinate(np.stack([_pose(3.1), _pose(-3.1)]))
    assert motion[0] == 0 and motion[-1] == pytest.approx(10 * (2 * np.pi - 6.2), abs=1e-6)
    assert budget(19, 0.1) == 2
