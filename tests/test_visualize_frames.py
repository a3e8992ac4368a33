"""tools/visualize.py's PNG numbering: consecutive over the frames drawn, whatever was skipped (ffmpeg's image2
sequence input, which --video feeds them to, stops at the first missing number), with frames.txt naming each
PNG's frame."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import visualize  # noqa: E402


def test_png_numbers_leave_no_gap_at_a_skipped_frame(tmp_path, capsys):
    folder = tmp_path / "seq"
    folder.mkdir()
    points = np.random.default_rng(0).uniform(-20, 20, (64, 4)).astype(np.float32)
    for name in ("000000", "000002", "000003"):
        np.save(folder / f"{name}.npy", points)
    (folder / "000001.npy").write_bytes(b"garbage")  # item 1 is skipped
    out = tmp_path / "png"
    assert visualize.main([str(folder), "--out", str(out), "--mode", "bev", "--video"]) == 0
    assert any(line.startswith("skipping a bad frame") for line in capsys.readouterr().err.splitlines())
    assert sorted(p.name for p in out.glob("*.png")) == ["000000.png", "000001.png", "000002.png"]
    rows = [line.split("\t") for line in (out / "frames.txt").read_text().splitlines()]
    assert rows == [["000000.png", "seq/000000"], ["000001.png", "seq/000002"], ["000002.png", "seq/000003"]]


def test_the_video_takes_exactly_the_frames_it_is_given(tmp_path, monkeypatch):
    """PNGs a longer earlier run left in the folder stay out: ffmpeg reads len(frames) from the first one's number
    (checked on the command, ffmpeg itself is not needed)."""
    import subprocess

    from pc3d.viz import write_video

    frames = [tmp_path / f"{i:06d}.png" for i in range(3)]
    for f in [*frames, tmp_path / "000003.png", tmp_path / "000004.png"]:  # two leftovers
        f.write_bytes(b"")
    calls = []
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/ffmpeg")
    monkeypatch.setattr(subprocess, "run", lambda cmd, check: calls.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    assert write_video(frames, tmp_path / "video.mp4") == tmp_path / "video.mp4"
    cmd = calls[0]
    assert cmd[cmd.index("-frames:v") + 1] == "3" and cmd[cmd.index("-start_number") + 1] == "0"
    with pytest.raises(ValueError, match="consecutive"):
        write_video([frames[0], frames[2]], tmp_path / "video.mp4")
