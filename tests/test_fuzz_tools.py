"""Fuzzing the inference readers, checkpoints and tools with corrupt input: every case ends in a pc3d error
naming the file (or a counted one-line warning), never a foreign exception, never silent loss."""
from __future__ import annotations

import datetime
import io
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import experiment_checkpoint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pc3d.engine import checkpoint as ckpt_mod
from pc3d.errors import CheckpointError, ConfigError, DataFormatError, Pc3dError
from pc3d.infer.point_files import bin_width, fit_columns, read_cloud, read_point_file
from pc3d.infer.sources import open_source

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import infer  # noqa: E402
import visualize  # noqa: E402

FUZZ = settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
POINTS = np.random.default_rng(0).uniform(-20, 20, (64, 4)).astype(np.float32)


def pcd_bytes(points: np.ndarray, fields: str = "x y z intensity", mode: str = "binary") -> bytes:
    n, c = points.shape
    header = (f"# .PCD v0.7\nVERSION 0.7\nFIELDS {fields}\nSIZE {' '.join(['4'] * c)}\nTYPE {' '.join(['F'] * c)}\n"
              f"COUNT {' '.join(['1'] * c)}\nWIDTH {n}\nHEIGHT 1\nPOINTS {n}\nDATA {mode}\n").encode()
    if mode == "binary":
        return header + points.astype("<f4").tobytes()
    return header + "\n".join(" ".join(f"{v:.6g}" for v in row) for row in points).encode() + b"\n"


def ply_bytes(points: np.ndarray, fmt: str = "binary_little_endian") -> bytes:
    header = (f"ply\nformat {fmt} 1.0\nelement vertex {len(points)}\nproperty float x\nproperty float y\n"
              "property float z\nproperty float intensity\nend_header\n").encode()
    if fmt == "ascii":
        return header + "\n".join(" ".join(f"{v:.6g}" for v in row) for row in points).encode() + b"\n"
    return header + points.astype("<f4").tobytes()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npz_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, points=array)
    return buffer.getvalue()


VALID = {".bin": POINTS.tobytes(), ".npy": npy_bytes(POINTS), ".npz": npz_bytes(POINTS), ".pcd": pcd_bytes(POINTS),
         ".ply": ply_bytes(POINTS)}


def read_or_error(path: Path, features=("intensity",)) -> np.ndarray | None:
    """The cloud of `path` (float32 [N, 3 + features], finite), or None after a DataFormatError naming it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            points = read_point_file(path, features)
    except DataFormatError as error:
        assert str(path) in str(error) and "\n" not in str(error), error
        return None
    assert points.dtype == np.float32 and points.shape[1] == 3 + len(features) and np.isfinite(points).all()
    return points


@pytest.mark.parametrize("ext", sorted(VALID))
def test_valid_files_of_every_format_read_the_same_points(tmp_path, ext):
    path = tmp_path / f"cloud{ext}"
    path.write_bytes(VALID[ext])
    np.testing.assert_allclose(read_or_error(path), POINTS, rtol=1e-6)


@pytest.mark.parametrize("ext", sorted(VALID))
@FUZZ
@given(data=st.data())
def test_truncated_files_never_raise_a_foreign_error(tmp_path, ext, data):
    valid = VALID[ext]
    cut = data.draw(st.integers(0, len(valid) - 1), label="cut")
    path = tmp_path / f"cut{ext}"
    path.write_bytes(valid[:cut])
    points = read_or_error(path)
    if points is not None:  # only a .bin cut on a whole row or an ascii cut on a whole line may still load
        assert ext == ".bin" and len(points) == cut // 16


@pytest.mark.parametrize("ext", sorted(VALID))
@FUZZ
@given(data=st.data())
def test_corrupted_bytes_never_raise_a_foreign_error(tmp_path, ext, data):
    raw = bytearray(VALID[ext])
    for _ in range(data.draw(st.integers(1, 8), label="flips")):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    path = tmp_path / f"flipped{ext}"
    path.write_bytes(bytes(raw))
    read_or_error(path)


@pytest.mark.parametrize("field, value", [("flags", 1),         # an encrypted member: zipfile's RuntimeError
                                          ("method", 99),       # a compression zipfile lacks: NotImplementedError
                                          ("version", 64)])     # zip version 6.4: NotImplementedError
def test_npz_archives_zipfile_cannot_open(tmp_path, field, value):
    """The zip headers of an .npz name a feature numpy's zipfile refuses; the reader names the file."""
    import struct
    import zipfile

    raw = bytearray(VALID[".npz"])
    offsets = {"version": 4, "flags": 6, "method": 8}  # in the local header (PK\x03\x04) and central (+2)
    for signature, shift in ((b"PK\x03\x04", 0), (b"PK\x01\x02", 2)):
        start = raw.find(signature)
        struct.pack_into("<H", raw, start + offsets[field] + shift, value)
    path = tmp_path / "odd.npz"
    path.write_bytes(bytes(raw))
    with pytest.raises((RuntimeError, NotImplementedError)):
        with zipfile.ZipFile(path) as archive:
            archive.read(archive.namelist()[0])
    assert read_or_error(path) is None


@pytest.mark.parametrize("ext", sorted(VALID))
@FUZZ
@given(blob=st.binary(max_size=512))
def test_random_bytes_never_raise_a_foreign_error(tmp_path, ext, blob):
    path = tmp_path / f"random{ext}"
    path.write_bytes(blob)
    read_or_error(path)


@FUZZ
@given(array=hnp.arrays(hnp.scalar_dtypes() | hnp.floating_dtypes(), hnp.array_shapes(min_dims=0, max_dims=3,
                                                                                    min_side=0, max_side=6)))
def test_npy_of_any_dtype_and_shape(tmp_path, array):
    for ext, blob in ((".npy", npy_bytes(array)), (".npz", npz_bytes(array))):
        path = tmp_path / f"array{ext}"
        path.write_bytes(blob)
        points = read_or_error(path)
        good = (array.dtype.kind == "f" and array.ndim == 2 and array.shape[1] == 4
                and np.isfinite(array.astype(np.float32)).any(axis=1).any())
        if points is not None:
            assert good and len(points) == np.isfinite(array.astype(np.float32)).all(1).sum()


@pytest.mark.parametrize("ext", sorted(VALID))
def test_empty_files_and_folders_are_named(tmp_path, ext):
    empty = tmp_path / f"empty{ext}"
    empty.write_bytes(b"")
    with pytest.raises(DataFormatError, match=f"empty{ext}"):
        read_point_file(empty)
    folder = tmp_path / f"folder{ext}"
    folder.mkdir()
    with pytest.raises(DataFormatError, match=f"folder{ext}: is a folder"):
        read_point_file(folder)


def test_empty_arrays_and_headers_of_zero_points(tmp_path):
    cases = {"zero.npy": npy_bytes(np.zeros((0, 4), np.float32)), "zero.pcd": pcd_bytes(np.zeros((0, 4))),
             "zero.ply": ply_bytes(np.zeros((0, 4))), "zero.npz": npz_bytes(np.zeros((0, 4), np.float32))}
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(DataFormatError, match=f"{name}: the cloud is empty"):
            read_point_file(tmp_path / name)


def test_bin_size_not_a_multiple_of_the_row(tmp_path):
    path = tmp_path / "odd.bin"
    path.write_bytes(POINTS.tobytes()[:-3])
    with pytest.raises(DataFormatError, match=r"odd.bin: size \d+ bytes is not a multiple of 16 \(4 float32"):
        read_point_file(path)
    five = tmp_path / "five.bin"  # 64 rows of 4 floats = 51.2 rows of 5: refused for a 5-column model
    five.write_bytes(POINTS.tobytes())
    with pytest.raises(DataFormatError, match="not a multiple of 20"):
        read_point_file(five, ("intensity", "elongation"))


def test_a_bin_file_of_another_width_is_refused_not_misread(tmp_path):
    """A 6-column x, y, z, r, g, b file whose size also divides into 4-column rows (an even point count) read for
    a 4-column model: its rows would not be points. The values tell the width (bin_width)."""
    rng = np.random.default_rng(0)
    lidar = np.c_[rng.uniform(-40, 40, (3000, 2)), rng.uniform(-2, 1, 3000), rng.random(3000)].astype(np.float32)
    rgb = np.c_[rng.uniform(0, 8, (3000, 2)), rng.uniform(0, 3, 3000), rng.integers(0, 256, (3000, 3))]
    rgb = rgb.astype(np.float32)
    assert bin_width(lidar.reshape(-1)) == 4 and bin_width(rgb.reshape(-1)) == 6
    assert bin_width(rgb[:100].reshape(-1)) is None  # too few points to tell
    lidar.tofile(tmp_path / "lidar.bin")
    rgb.tofile(tmp_path / "scene.bin")
    np.testing.assert_array_equal(read_point_file(tmp_path / "lidar.bin"), lidar)
    np.testing.assert_array_equal(read_point_file(tmp_path / "scene.bin", ("r", "g", "b")), rgb)
    with pytest.raises(DataFormatError, match="scene.bin: read as 4 float32 per point .* repeat every 6"):
        read_point_file(tmp_path / "scene.bin")
    with pytest.raises(DataFormatError, match="scene.bin: read as 5 float32"):
        read_point_file(tmp_path / "scene.bin", ("intensity", "time"), pad=True)


def test_nan_rows_are_dropped_counted_once_and_kept_as_a_mask(tmp_path):
    points = POINTS.copy()
    points[[3, 10, 11], 1] = np.nan
    points[20, 0] = np.inf
    path = tmp_path / "nan.npy"
    np.save(path, points)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = read_point_file(path)
    assert [str(w.message) for w in caught] == [f"{path}: dropped 4 of 64 points with NaN / inf"]
    assert len(out) == 60
    cloud = read_cloud(path)
    assert cloud.dropped == 4 and cloud.kept.sum() == 60 and not cloud.kept[[3, 10, 11, 20]].any()
    np.save(path, np.full((5, 4), np.nan, np.float32))
    with pytest.raises(DataFormatError, match="nan.npy: all 5 points have NaN / inf"):
        read_point_file(path)
    np.save(path, np.full((5, 4), 1e39))  # float64 beyond float32: inf once read
    with pytest.raises(DataFormatError, match="all 5 points"):
        read_point_file(path)


def test_columns_must_match_the_model_unless_padded(tmp_path):
    path = tmp_path / "five.npy"
    np.save(path, np.ones((10, 5), np.float32))
    with pytest.raises(DataFormatError, match="five.npy: 5 values per point, the model reads 4: x, y, z, intensity"):
        read_point_file(path)
    assert read_point_file(path, ("intensity",), pad=True).shape == (10, 4)
    np.save(path, np.ones((10, 3), np.float32))
    with pytest.raises(DataFormatError, match="3 values per point"):
        read_point_file(path)
    np.save(path, np.ones((10, 4), np.float32))  # a single scan has no time column: 0
    assert (read_point_file(path, ("intensity", "time"))[:, 4] == 0).all()
    named = tmp_path / "xyz_rgb.pcd"  # named columns: picked by name, a missing one is refused
    named.write_bytes(pcd_bytes(np.ones((4, 6)), "x y z red green blue", "ascii"))
    assert read_point_file(named, ("r", "g", "b")).shape == (4, 6)
    with pytest.raises(DataFormatError, match=r"xyz_rgb.pcd: no intensity column \(it has x, y, z, r, g, b\)"):
        read_point_file(named, ("intensity",))
    picked = fit_columns(np.arange(12, dtype=np.float32).reshape(2, 6), ("b", "r"), "f", ("r", "g", "b"))
    np.testing.assert_array_equal(picked[:, 3:], [[5, 3], [11, 9]])


def test_pcd_and_ply_headers(tmp_path):
    cases = {
        "nodata.pcd": b"# .PCD v0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nPOINTS 1\n",
        "badsize.pcd": b"FIELDS x y z\nSIZE 4 4\nTYPE F F F\nPOINTS 1\nDATA ascii\n1 2 3\n",
        "words.pcd": b"FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nPOINTS 1\nDATA ascii\n1 two 3\n",
        "mode.pcd": b"FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nPOINTS 1\nDATA weird\n",
        "noxyz.pcd": b"FIELDS a b c\nSIZE 4 4 4\nTYPE F F F\nPOINTS 1\nDATA ascii\n1 2 3\n",
        "short.ply": ply_bytes(POINTS, "ascii").replace(b"vertex 64", b"vertex 65"),
        "noheader.ply": b"ply\nformat ascii 1.0\n",
        "noxyz.ply": b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float a\nend_header\n1\n",
    }
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(DataFormatError, match=name):
            read_point_file(tmp_path / name)


def test_unknown_extensions_and_missing_paths(tmp_path):
    (tmp_path / "cloud.xyz").write_text("1 2 3\n")
    with pytest.raises(DataFormatError, match=r"cloud.xyz: unsupported point file type '.xyz'"):
        open_source(tmp_path / "cloud.xyz")
    with pytest.raises(DataFormatError, match="nowhere: no such file or folder"):
        open_source(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="empty: no frames"):
        open_source(tmp_path / "empty")


@pytest.fixture(scope="module")
def kitti(tmp_path_factory) -> Path:
    from pc3d.sim.api import simulate_dataset

    root = tmp_path_factory.mktemp("fuzz") / "kitti"
    simulate_dataset("kitti", root, frames=3, seed=0, columns=256)
    return root


@pytest.fixture(scope="module")
def ckpt(kitti, tmp_path_factory) -> Path:
    return experiment_checkpoint(tmp_path_factory.mktemp("runs"), "pointpillars_sim_kitti", f"dataset.root={kitti}")


def copy_kitti(kitti: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(kitti, dst)
    return dst


def test_kitti_frame_without_calibration_is_refused(kitti, tmp_path):
    root = copy_kitti(kitti, tmp_path / "kitti")
    frame = (root / "ImageSets" / "train.txt").read_text().split()[0]
    (root / "training" / "calib" / f"{frame}.txt").unlink()
    source = open_source(root, ("intensity",), "train")
    with pytest.raises(DataFormatError, match=f"calib/{frame}.txt: calibration file missing"):
        source.read(frame)
    (root / "ImageSets" / "train.txt").write_text(f"{frame}\n{frame}\n")
    with pytest.raises(DataFormatError, match=f"train.txt: line 2: id '{frame}' is listed twice"):
        open_source(root, ("intensity",), "train")
    with pytest.raises(DataFormatError, match=r"ImageSets/bogus.txt: no such split list \(--split bogus\)"):
        open_source(root, ("intensity",), "bogus")  # never a silent run over every scan


def test_fifos_are_refused_not_read(tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.bin")
    with pytest.raises(DataFormatError, match="pipe.bin: neither a regular file nor a folder"):
        open_source(tmp_path / "pipe.bin")
    np.zeros((5, 4), np.float32).tofile(tmp_path / "real.bin")
    source = open_source(tmp_path)
    assert [p.name for p in source._items()] == ["pipe.bin", "real.bin"]  # listed, so a skip is counted
    with pytest.raises(DataFormatError, match="pipe.bin: neither a regular file nor a folder"):
        source.read(tmp_path / "pipe.bin")  # refused without opening it (opening a FIFO blocks)


def test_infer_skips_the_kitti_frame_without_calibration(kitti, ckpt, tmp_path, capsys):
    root = copy_kitti(kitti, tmp_path / "kitti")
    frames = sorted(p.stem for p in (root / "training" / "velodyne").glob("*.bin"))
    (root / "ImageSets" / "train.txt").write_text("\n".join(frames) + "\n")
    (root / "training" / "calib" / f"{frames[1]}.txt").unlink()
    np.full((8, 4), np.nan, np.float32).tofile(root / "training" / "velodyne" / f"{frames[2]}.bin")
    velodyne = root / "training" / "velodyne" / f"{frames[0]}.bin"
    scan = np.fromfile(velodyne, np.float32).reshape(-1, 4)
    scan[:7] = np.nan
    scan.tofile(velodyne)
    out = tmp_path / "out"
    assert infer.main([str(ckpt), str(root), "--split", "train", "--out", str(out), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if "infer:" not in line]
    assert err == [f"{velodyne}: dropped 7 of {len(scan)} points with NaN / inf",
                   f"skipping a bad frame: {root}/training/calib/{frames[1]}.txt: calibration file missing (frame "
                   f"{frames[1]}): its boxes need the LiDAR -> camera calibration",
                   f"skipping a bad frame: {root}/training/velodyne/{frames[2]}.bin: all 8 points have NaN / inf "
                   "values"], err
    assert "2 bad frame(s) skipped" in captured.out and "7 points with NaN / inf dropped in 1 frame(s)" in captured.out
    assert sorted(p.stem for p in (tmp_path / "out" / "kitti").glob("*.txt")) == [frames[0]]


@pytest.mark.parametrize("case", ["empty", "truncated", "random", "pickled", "folder", "other_model", "no_model",
                                  "no_config", "missing"])
def test_infer_checkpoint_errors_are_one_line(ckpt, kitti, tmp_path, capsys, case):
    good = ckpt.read_bytes()
    path = tmp_path / f"{case}.pt"
    state = torch.load(ckpt, weights_only=True)
    if case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        path.write_bytes(good[: len(good) // 3])
    elif case == "random":
        path.write_bytes(os.urandom(4096))
    elif case == "pickled":
        torch.save({**state, "when": datetime.timedelta(days=1)}, path)
    elif case == "folder":
        path.mkdir()
    elif case == "other_model":
        torch.save({**state, "model": {"head.weight": torch.zeros(3)}}, path)
    elif case == "no_model":
        torch.save({k: v for k, v in state.items() if k != "model"}, path)
    elif case == "no_config":
        torch.save({k: v for k, v in state.items() if k != "config"}, path)
    if case == "other_model":  # the runner loads the state dict: checked through checkpoint.load_model_state
        from pc3d.engine.checkpoint import load_model_state
        from pc3d.engine.runner import _instantiate

        model = _instantiate(state["config"]["model"])
        with pytest.raises(CheckpointError, match=r"other_model.pt: weights of another model than PointPillars: keys "
                                                  r"\d+ missing \(.* and \d+ more\); 1 unexpected \(head.weight\)"):
            load_model_state(model, torch.load(path, weights_only=True)["model"], path)
        return
    scan = kitti / "training" / "velodyne" / "000000.bin"
    assert infer.main([str(path), str(scan), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith(f"infer: error: {path}") and "Traceback" not in err[0], err
    if case == "pickled":
        assert "pickled checkpoint" in err[0] and "convert-checkpoint" in err[0] and "truncated" not in err[0]


@FUZZ
@given(data=st.data())
def test_checkpoint_truncation_and_flips(ckpt, tmp_path, data):
    raw = bytearray(ckpt.read_bytes())
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="cut")]
    else:
        for _ in range(data.draw(st.integers(1, 16), label="flips")):
            raw[data.draw(st.integers(0, len(raw) - 1))] ^= 0xFF
    path = tmp_path / "fuzzed.pt"
    path.write_bytes(bytes(raw))
    try:
        ckpt_mod.load_checkpoint(path)  # a flip inside tensor data leaves a loadable file
    except CheckpointError as error:
        assert str(path) in str(error) and "\n" not in str(error)


def test_convert_checkpoint_keeps_weights_and_lists_what_it_drops(tmp_path):
    src = tmp_path / "old.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "np": np.arange(3), "args": datetime.date(2020, 1, 1),
                "epoch": np.int64(7)}, src)
    with pytest.raises(CheckpointError, match="old.pt: a pickled checkpoint"):
        ckpt_mod.load_checkpoint(src)
    dropped = ckpt_mod.convert_checkpoint(src, tmp_path / "new.pt")
    assert dropped == ["args (datetime.date)"]
    new = torch.load(tmp_path / "new.pt", weights_only=True)
    assert new["epoch"] == 7 and torch.equal(new["np"], torch.arange(3)) and torch.equal(new["state_dict"]["w"],
                                                                                           torch.ones(2))
    with pytest.raises(CheckpointError, match="another file"):
        ckpt_mod.convert_checkpoint(src, src)


def test_test_tool_settings_are_type_checked():
    import test as test_tool
    from omegaconf import OmegaConf

    base = OmegaConf.load(ROOT / "configs" / "test.yaml")
    base.pop("defaults")
    base.pop("hydra")
    test_tool.check_settings(base)
    for key, value in (("batch_size", "abc"), ("batch_size", 0), ("workers", -1), ("ema", "maybe"),
                       ("write_predictions", 1), ("overrides", 5), ("device", "banana"), ("split", [1])):
        cfg = base.copy()
        cfg[key] = value
        with pytest.raises(ConfigError, match=f"^{key}: expected"):
            test_tool.check_settings(cfg)


def test_visualize_skips_bad_frames_and_bad_prediction_files(tmp_path, capsys):
    folder = tmp_path / "seq"
    folder.mkdir()
    np.save(folder / "000000.npy", POINTS)
    (folder / "000001.npy").write_bytes(b"garbage")
    np.save(folder / "000002.npy", POINTS)
    pred = tmp_path / "json" / "seq"
    pred.mkdir(parents=True)
    (pred / "000002.json").write_text('{"boxes": [[1, 2]], "scores": [1], "labels": [1]}')
    assert visualize.main([str(folder), "--pred", str(tmp_path / "json"), "--out", str(tmp_path / "png"), "--mode",
                           "bev"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("skipping")]
    assert len(err) == 2 and "000001.npy: not a .npy array" in err[0] and "000002.json: not a tools/infer.py" in err[1]
    assert [p.name for p in (tmp_path / "png").glob("*.png")] == ["000000.png"]
    assert visualize.main([str(folder / "000001.npy"), "--out", str(tmp_path / "png")]) == 2


def tool(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PC3D_DEBUG": "0"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_entry_points_answer_bad_input_with_one_line(ckpt, kitti, tmp_path):
    """A few cases through the real processes (each pays the torch import): one line, exit 2, no traceback."""
    odd = tmp_path / "odd.bin"
    odd.write_bytes(b"\0" * 10)
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "pc3d-checkpoint", "obj": datetime.timedelta(1)}, pickled)
    cases = [
        (("tools/infer.py", str(ckpt), str(odd), "--out", str(tmp_path / "o")), "infer: error: ", str(odd)),
        (("tools/infer.py", str(pickled), str(odd)), "infer: error: ", "pickled checkpoint"),
        (("tools/test.py", f"ckpt={ckpt}", "batch_size=abc"), "test: error: ", "batch_size"),
        (("tools/test.py", f"ckpt={tmp_path}"), "test: error: ", str(tmp_path)),
        (("tools/visualize.py", str(tmp_path / "nowhere")), "visualize: error: ", "nowhere"),
        (("tools/simulate.py", "frames=abc", f"out={tmp_path / 'sim'}"), "simulate: error: ", "frames"),
        (("-m", "pc3d", "convert-checkpoint", str(tmp_path / "none.pt"), str(tmp_path / "x.pt")), "pc3d: error: ",
         "none.pt"),
    ]
    for args, prefix, needle in cases:
        done = tool(*args)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 2, (args, done.stderr)
        assert len(lines) == 1 and lines[0].startswith(prefix) and needle in lines[0], (args, lines)
    assert not (tmp_path / "sim").exists()


def test_every_failure_above_is_a_pc3d_error():
    assert issubclass(DataFormatError, Pc3dError) and issubclass(CheckpointError, Pc3dError)
