"""Fuzzing the dataset loaders and create_data: every corrupted file ends in a pc3d error naming it, or
loads with what was left out counted and warned; never a foreign exception, never silent loss."""
from __future__ import annotations

import importlib.util
import json
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pc3d.data import KittiDataset, ScanNetDataset, SceneFlowDataset, SemanticKittiDataset, WaymoDataset
from pc3d.data.create import create_data
from pc3d.data.dataset import DataWarning
from pc3d.errors import DataFormatError, Pc3dError
from pc3d.sim.api import simulate_dataset
from pc3d.sim.labels import KITTI_TYPES

FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FEW = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """Tiny simulated datasets, never modified (tests copy or restore what they corrupt)."""
    base = tmp_path_factory.mktemp("pristine")
    out = {"kitti": simulate_dataset("kitti", base / "kitti", frames=2, seed=0, columns=256),
           "semantickitti": simulate_dataset("semantickitti", base / "sk", frames=2, seed=0, sequence_length=2,
                                             columns=256),
           "sceneflow": simulate_dataset("sceneflow_kitti", base / "sf", frames=1, seed=0, columns=256),
           "scannet": simulate_dataset("scannet", base / "scannet", frames=1, seed=0)}
    if importlib.util.find_spec("pyarrow"):
        out["waymo"] = simulate_dataset("waymo", base / "waymo", frames=2, seed=0, sequence_length=2, columns=256)
    return out


@pytest.fixture(scope="module")
def work(pristine, tmp_path_factory):
    """Module copies that fuzz tests corrupt and restore."""
    base = tmp_path_factory.mktemp("work")
    return {k: Path(shutil.copytree(v, base / k)) for k, v in pristine.items()}


@pytest.fixture
def copy(pristine, tmp_path):
    """copy(name) -> a fresh copy of a pristine dataset for one test."""
    return lambda name: Path(shutil.copytree(pristine[name], tmp_path / name))


@contextmanager
def corrupted(path: Path, content: bytes | None):
    """`path` holds `content` (None: deleted) inside the block, its original bytes after."""
    original = path.read_bytes()
    try:
        if content is None:
            path.unlink()
        else:
            path.write_bytes(content)
        yield
    finally:
        path.write_bytes(original)


def outcome(load, names: tuple[str, ...]):
    """Run `load`; a pc3d error must name one of `names` (file names). Returns ("error", error) or
    ("ok", (result, DataWarnings)); any other exception fails the test."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = load()
        except Pc3dError as error:
            assert any(n in str(error) for n in names), f"{error!r} names none of {names}"
            return "error", error
    return "ok", (result, [w for w in caught if issubclass(w.category, DataWarning)])


def mutate(original: bytes, data) -> bytes:
    """Random damage: truncate at a random byte, flip bytes, empty, garbage, or a duplicated tail."""
    mode = data.draw(st.sampled_from(["truncate", "flip", "empty", "garbage", "repeat"]))
    if mode == "truncate":
        return original[:data.draw(st.integers(0, max(len(original) - 1, 0)))]
    if mode == "flip":
        buf = bytearray(original)
        for _ in range(data.draw(st.integers(1, 8))):
            buf[data.draw(st.integers(0, len(buf) - 1))] ^= data.draw(st.integers(1, 255))
        return bytes(buf)
    if mode == "empty":
        return b""
    if mode == "garbage":
        return data.draw(st.binary(max_size=512))
    return original + original[-data.draw(st.integers(1, min(len(original), 64))):]


def mutate_text(original: str, data) -> str:
    """Line-level damage of a text file: NaN / inf / negative / non-numeric tokens, wrong column counts,
    duplicated or deleted lines."""
    lines = original.splitlines()
    k = data.draw(st.integers(0, len(lines) - 1))
    fields = lines[k].split()
    mode = data.draw(st.sampled_from(["token", "drop_field", "add_field", "duplicate", "delete"]))
    if mode == "duplicate":
        lines.insert(k, lines[k])
    elif mode == "delete":
        del lines[k]
    else:
        if mode == "token":
            j = data.draw(st.integers(0, len(fields) - 1))
            fields[j] = data.draw(st.sampled_from(["nan", "inf", "-inf", "-1.5", "x", "1e400", ""]))
        elif mode == "drop_field":
            del fields[data.draw(st.integers(0, len(fields) - 1))]
        else:
            fields.append("0.5")
        lines[k] = " ".join(fields)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- KITTI

KITTI_FILES = ("training/velodyne/000000.bin", "training/label_2/000000.txt", "training/calib/000000.txt",
               "training/image_2/000000.png", "ImageSets/train.txt")


@FUZZ
@given(data=st.data(), which=st.sampled_from(KITTI_FILES), delete=st.booleans())
def test_fuzz_kitti_bytes(work, data, which, delete):
    path = work["kitti"] / which
    content = None if delete and data.draw(st.integers(0, 4)) == 0 else mutate(path.read_bytes(), data)
    # a damaged id list may name another frame, whose missing files are then the error
    names = (path.name, "training/velodyne/") if which.startswith("ImageSets") else (path.name,)
    with corrupted(path, content):
        kind, value = outcome(lambda: KittiDataset(work["kitti"], "train").load(0), names)
    if kind == "ok" and which.endswith(".bin"):
        sample, _ = value
        assert len(sample["points"]), "a labelled frame loaded without points"


@FUZZ
@given(data=st.data(), which=st.sampled_from(["training/label_2/000000.txt", "training/calib/000000.txt"]))
def test_fuzz_kitti_text(work, data, which):
    path = work["kitti"] / which
    with corrupted(path, mutate_text(path.read_text(), data).encode()):
        kind, value = outcome(lambda: KittiDataset(work["kitti"], "train").load(0), (path.name,))
    if kind == "ok" and "label_2" in which:  # whatever loads is what the file says: nothing vanished
        annos = value[0]["metadata"]["annos"]
        assert set(annos["name"]) <= set(KITTI_TYPES)
        assert (annos["dimensions"][annos["name"] != "DontCare"] >= 0).all()


@FEW
@given(name=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12).filter(
    lambda n: n not in KITTI_TYPES), line=st.integers(0, 5))
def test_kitti_unknown_class_names_the_file_and_line(work, name, line):
    path = work["kitti"] / "training" / "label_2" / "000000.txt"
    lines = path.read_text().splitlines()
    lines[line] = " ".join([name, *lines[line].split()[1:]])
    with corrupted(path, ("\n".join(lines) + "\n").encode()):
        kind, error = outcome(lambda: KittiDataset(work["kitti"], "train").load(0), (path.name,))
    assert kind == "error" and f"line {line + 1}: unknown class" in str(error)


@FEW
@given(line=st.integers(0, 5), column_value=st.one_of(
    st.tuples(st.integers(8, 10), st.sampled_from(["-0.01", "-1.65", "nan", "-inf", "0", "0.0"])),  # sizes
    st.tuples(st.just(2), st.sampled_from(["4", "9", "-2", "1.5"])),  # occluded outside 0..3
    st.tuples(st.just(1), st.sampled_from(["1.2", "-0.5", "7"]))))  # truncated outside [0, 1]
def test_kitti_object_values_out_of_the_devkit_ranges(work, line, column_value):
    column, value = column_value
    path = work["kitti"] / "training" / "label_2" / "000000.txt"
    lines = path.read_text().splitlines()
    fields = lines[line].split()
    assert fields[0] != "DontCare"
    fields[column] = value
    lines[line] = " ".join(fields)
    with corrupted(path, ("\n".join(lines) + "\n").encode()):
        kind, error = outcome(lambda: KittiDataset(work["kitti"], "train").load(0), (path.name,))
    assert kind == "error" and f"line {line + 1}" in str(error)


def test_kitti_duplicates_are_errors(copy):
    root = copy("kitti")
    (root / "ImageSets" / "trainval.txt").write_text("000000\n000001\n\n000000\n")
    with pytest.raises(DataFormatError, match=r"trainval.txt: line 4: id '000000' is listed twice \(first on line 1"):
        KittiDataset(root, "trainval")
    label = root / "training" / "label_2" / "000000.txt"
    lines = label.read_text().splitlines()
    label.write_text("\n".join([*lines, lines[0]]) + "\n")
    with pytest.raises(DataFormatError, match=f"000000.txt: line {len(lines) + 1}: the object of line 1 again"):
        KittiDataset(root, "train").load(0)
    with pytest.raises(DataFormatError, match="kitti_infos|train.txt|000000"):  # create_data never multiplies
        (root / "ImageSets" / "train.txt").write_text("000000\n000000\n")
        create_data("kitti", root)


def test_kitti_empty_scan(copy):
    root = copy("kitti")
    velodyne = root / "training" / "velodyne" / "000000.bin"
    velodyne.write_bytes(b"")
    with pytest.raises(DataFormatError, match=r"000000.bin: no points .*, but label_2/000000.txt labels \d+ objects"):
        KittiDataset(root, "train").load(0)
    velodyne.write_bytes(np.array([[-5.0, 0.0, 0.0, 0.5]], np.float32).tobytes())  # one point, behind the camera
    with pytest.raises(DataFormatError, match=r"000000.bin: no points in the camera's field of view, but"):
        KittiDataset(root, "train").load(0)
    shutil.rmtree(root / "training" / "label_2")  # unlabelled: counted and warned once per dataset
    (root / "training" / "velodyne" / "000001.bin").write_bytes(b"")
    ds = KittiDataset(root, "trainval")
    with pytest.warns(DataWarning, match=r"empty scans \(0 points\): 1 \(.*000000.bin\)"):
        assert len(ds.load(0)["points"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds.load(1)
    assert len(ds.notes["empty scans (0 points)"]) == 2 and "empty scans (0 points): 2" in ds.skip_report()


def test_kitti_config_and_image_checks(copy):
    root = copy("kitti")
    with pytest.raises(Pc3dError, match="Carr"):
        KittiDataset(root, "train", class_names=("Carr", "Pedestrian"))
    (root / "training" / "image_2" / "000000.png").unlink()
    with pytest.raises(DataFormatError, match="000000.png: missing or not a PNG"):
        KittiDataset(root, "train").load(0)


# ---------------------------------------------------------------- SemanticKITTI

SK_FILES = ("velodyne/000001.bin", "labels/000001.label", "velodyne/000000.bin", "labels/000000.label",
            "poses.txt", "calib.txt", "times.txt")


@FUZZ
@given(data=st.data(), which=st.sampled_from(SK_FILES), delete=st.booleans())
def test_fuzz_semantickitti_bytes(work, data, which, delete):
    root = work["semantickitti"]
    path = root / "sequences" / "00" / which
    content = None if delete and data.draw(st.integers(0, 4)) == 0 else mutate(path.read_bytes(), data)
    with corrupted(path, content):  # a scan and its label file disagree: either may be named
        kind, value = outcome(lambda: SemanticKittiDataset(root, sequences=[0], n_past_scans=1).load(1),
                              (path.name, f"{Path(which).stem}.bin", f"{Path(which).stem}.label"))
    if kind == "ok":
        sample, _ = value
        assert len(sample["point_labels"]) == len(sample["points"])


@FUZZ
@given(data=st.data(), which=st.sampled_from(["poses.txt", "calib.txt", "times.txt"]))
def test_fuzz_semantickitti_text(work, data, which):
    root = work["semantickitti"]
    path = root / "sequences" / "00" / which
    with corrupted(path, mutate_text(path.read_text(), data).encode()):
        outcome(lambda: SemanticKittiDataset(root, sequences=[0], n_past_scans=1).load(1), (path.name,))


def test_semantickitti_missing_sequences(copy):
    root = copy("semantickitti")
    with pytest.raises(DataFormatError, match=r"sequences: sequences \['03'\] have no scans"):
        SemanticKittiDataset(root, sequences=[0, 3])
    (root / "sequences" / "01" / "velodyne").mkdir(parents=True)  # an empty folder is missing too
    with pytest.raises(DataFormatError, match=r"\['01'\] have no scans"):
        SemanticKittiDataset(root, sequences=[0, 1])
    with pytest.warns(DataWarning, match=r"sequences of split 'train' missing or empty: 9 \(.*sequences/01"):
        ds = SemanticKittiDataset(root, split="train")  # the devkit's 00-07, 09, 10: only 00 is here
    assert len(ds) == 2 and len(ds.notes["sequences of split 'train' missing or empty"]) == 9
    with pytest.raises(Pc3dError, match="listed twice"):
        SemanticKittiDataset(root, sequences=[0, "00"])


def test_semantickitti_half_labelled_split(copy):
    root = copy("semantickitti")
    shutil.copytree(root / "sequences" / "00", root / "sequences" / "01")
    shutil.rmtree(root / "sequences" / "01" / "labels")
    with pytest.raises(DataFormatError, match="sequences/01: no labels/ folder"):
        SemanticKittiDataset(root, sequences=[0, 1])
    assert len(SemanticKittiDataset(root, sequences=[1])) == 2  # a test sequence alone has no labels


def test_semantickitti_label_count_and_poses(copy):
    root = copy("semantickitti")
    seq = root / "sequences" / "00"
    label = seq / "labels" / "000000.label"
    label.write_bytes(label.read_bytes() + b"\0\0\0\0")
    with pytest.raises(DataFormatError, match="000000.label: .* expected"):
        SemanticKittiDataset(root, sequences=[0]).load(0)
    (seq / "times.txt").write_text("0.0\n")
    with pytest.raises(DataFormatError, match="times.txt: 1 times for 2 poses"):
        SemanticKittiDataset(root, sequences=[0], n_past_scans=1).load(1)
    (seq / "poses.txt").write_text("0 0 0 0 0 0 0 0 0 0 0 0\n" * 2)
    with pytest.raises(DataFormatError, match="poses.txt: pose 1: singular"):
        SemanticKittiDataset(root, sequences=[0], n_past_scans=1).load(1)


# ---------------------------------------------------------------- Waymo

WAYMO_COMPONENTS = ("lidar", "lidar_calibration", "lidar_box", "vehicle_pose")


def _segment_file(root: Path, component: str) -> Path:
    (path,) = (root / "training" / component).glob("*.parquet")
    return path


@FUZZ
@given(data=st.data(), component=st.sampled_from(WAYMO_COMPONENTS[:3]))
def test_fuzz_waymo_bytes(work, data, component):
    pytest.importorskip("pyarrow")
    path = _segment_file(work["waymo"], component)
    with corrupted(path, mutate(path.read_bytes(), data)):
        def load():
            ds = WaymoDataset(work["waymo"], "training")
            return [ds.load(i) for i in range(len(ds))]

        outcome(load, (path.name,))


@FEW
@given(data=st.data(), component=st.sampled_from(WAYMO_COMPONENTS[:3]))
def test_fuzz_waymo_values(work, data, component):
    """Column values: nulls, NaN, negative sizes, unknown types, wrong list lengths, dropped rows."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = _segment_file(work["waymo"], component)
    table = pq.read_table(path)
    numeric = [n for n in table.column_names if pa.types.is_floating(table.schema.field(n).type)
               or pa.types.is_integer(table.schema.field(n).type)]
    lists = [n for n in table.column_names if pa.types.is_list(table.schema.field(n).type)]
    mode = data.draw(st.sampled_from(["value", "null", "list", "rows"]))
    if mode == "rows":
        table = table.slice(0, data.draw(st.integers(0, max(table.num_rows - 1, 0))))
    elif mode == "list" and lists:
        name = data.draw(st.sampled_from(lists))
        column = table.column(name).to_pylist()
        row = data.draw(st.integers(0, len(column) - 1))
        column[row] = column[row][:data.draw(st.integers(0, len(column[row]) or 1))] if column[row] else None
        table = table.set_column(table.column_names.index(name), name, pa.array(column, table.schema.field(name).type))
    else:
        name = data.draw(st.sampled_from(numeric))
        column = table.column(name).to_pylist()
        row = data.draw(st.integers(0, len(column) - 1))
        kind = table.schema.field(name).type
        column[row] = None if mode == "null" else data.draw(
            st.sampled_from([float("nan"), -1.0, 1e30, 7.0]) if pa.types.is_floating(kind) else st.sampled_from(
                [-1, 9, 127]))
        table = table.set_column(table.column_names.index(name), name, pa.array(column, kind))
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    with corrupted(path, buffer.getvalue().to_pybytes()):
        def load():
            ds = WaymoDataset(work["waymo"], "training")
            return [ds.load(i) for i in range(len(ds))]

        kind, value = outcome(load, (path.name,))
    if kind == "ok":
        for sample in value[0]:
            annos = sample["metadata"]["annos"]
            assert np.isfinite(annos["box"]).all() and (annos["box"][:, 3:6] >= 0).all()


def test_waymo_missing_or_empty_components(copy):
    pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    root = copy("waymo")
    boxes = _segment_file(root, "lidar_box")
    boxes.unlink()
    with pytest.raises(DataFormatError, match=f"{boxes.name}: missing: every training segment needs its boxes"):
        WaymoDataset(root, "training").load(0)
    assert len(WaymoDataset(root, "training", labels=False).load(0)["gt_boxes"]) == 0  # inference reads points
    (root / "training").rename(root / "testing")
    assert len(WaymoDataset(root, "testing").load(0)["gt_boxes"]) == 0  # testing has no labels
    lidar = _segment_file(root.parent / root.name, "lidar") if (root / "training").is_dir() else next(
        (root / "testing" / "lidar").glob("*.parquet"))
    pq.write_table(pq.read_table(lidar).slice(0, 0), lidar)
    with pytest.raises(DataFormatError, match=f"{lidar.name}: no frames: 0 rows"):
        WaymoDataset(root, "testing")


def test_waymo_no_cascade_after_a_bad_segment_table(copy):
    """After an unreadable calibration or box file, every frame of the segment raises the same error, and
    skip_bad_frames skips them all with one message each."""
    pytest.importorskip("pyarrow")
    for component in ("lidar_calibration", "lidar_box"):
        root = copy("waymo")
        path = _segment_file(root, component)
        path.write_bytes(path.read_bytes()[:100])
        ds = WaymoDataset(root, "training")
        messages = []
        for i in range(len(ds)):
            with pytest.raises(DataFormatError) as info:
                ds.load(i)
            messages.append(str(info.value))
        assert len(set(messages)) == 1 and path.name in messages[0]
        skipping = WaymoDataset(root, "training", skip_bad_frames=True)
        with warnings.catch_warnings(record=True), pytest.raises(DataFormatError, match="all 2 frames are bad"):
            warnings.simplefilter("always")
            skipping[0]
        assert len(skipping.skipped) == 2
        shutil.rmtree(root)


def test_waymo_index_json(copy):
    pytest.importorskip("pyarrow")
    root = copy("waymo")
    create_data("waymo", root)
    index = root / "waymo_infos_training.json"
    header = json.loads(index.read_text())
    for bad in ("{not json", json.dumps({**header, "segments": header["segments"] * 2}),
                json.dumps({**header, "segments": [{"segment": "x"}]}), json.dumps([1, 2])):
        index.write_text(bad)
        with pytest.raises(DataFormatError, match="waymo_infos_training.json"):
            WaymoDataset(root, "training")


# ---------------------------------------------------------------- ScanNet

SCENE = "scans/scene0000_00/scene0000_00"


@FUZZ
@given(data=st.data(), which=st.sampled_from(["_vh_clean_2.ply", "_vh_clean_2.labels.ply", ".txt",
                                                "_vh_clean_2.0.010000.segs.json", ".aggregation.json"]))
def test_fuzz_scannet_bytes(work, data, which):
    pytest.importorskip("plyfile")
    path = work["scannet"] / f"{SCENE}{which}"
    original = path.read_bytes()
    head = original[:original.index(b"end_header") + 11] if which.endswith(".ply") else b""
    mode = data.draw(st.sampled_from(["bytes", "body"])) if head else "bytes"
    # "body": a valid header over a damaged body (truncated or extended), so the counts must be checked
    content = mutate(original, data) if mode == "bytes" else head + mutate(original[len(head):], data)
    with corrupted(path, content):
        outcome(lambda: ScanNetDataset(work["scannet"], "train", instances=True).load(0), (path.name,))


@FEW
@given(which=st.sampled_from(["_vh_clean_2.ply", "_vh_clean_2.labels.ply"]), delta=st.integers(-1000, 1000).filter(
    bool), element=st.sampled_from([b"vertex", b"face"]))
@example(which="_vh_clean_2.ply", delta=-121, element=b"vertex")  # its faces' walk ended where the file does
def test_scannet_ply_header_counts(work, which, delta, element):
    """A header that under- or over-counts vertices (or faces) never drops or invents rows."""
    path = work["scannet"] / f"{SCENE}{which}"
    original = path.read_bytes()
    start = original.index(b"element " + element + b" ") + len(element) + 9
    end = original.index(b"\n", start)
    count = int(original[start:end])
    content = original[:start] + str(max(count + delta, 0)).encode() + original[end:]
    with corrupted(path, content):
        kind, error = outcome(lambda: ScanNetDataset(work["scannet"], "train").load(0), (path.name,))
    assert kind == "error", f"{which} with {element.decode()} count {count} + {delta} loaded"


def test_scannet_lists_and_labels(copy):
    root = copy("scannet")
    (root / "scannetv2_train.txt").write_text("scene0000_00\nscene0000_00\n")
    with pytest.raises(DataFormatError, match="scannetv2_train.txt: line 2: id 'scene0000_00' is listed twice"):
        ScanNetDataset(root, "train")


# ---------------------------------------------------------------- scene flow

@FUZZ
@given(data=st.data(), which=st.sampled_from(["pc1.npy", "pc2.npy", "mask.npy"]))
def test_fuzz_sceneflow(work, data, which):
    folder = work["sceneflow"] / "KITTI_processed_occ_final" / "000000"
    path = folder / which
    if which == "mask.npy":
        np.save(path, np.ones(len(np.load(folder / "pc1.npy")), bool))
    mode = data.draw(st.sampled_from(["bytes", "array"]))
    if mode == "bytes":
        content = mutate(path.read_bytes(), data)
    else:
        shape = (data.draw(st.integers(0, 40)), data.draw(st.integers(0, 5)))
        array = data.draw(st.sampled_from([np.zeros(shape, np.float32), np.full(shape, np.nan, np.float32),
                                           np.full(shape, np.inf), np.zeros(shape, np.int32),
                                           np.array(["a"] * shape[0])]))
        path_buffer = folder / "buffer.npy"
        np.save(path_buffer, array)
        content = path_buffer.read_bytes()
        path_buffer.unlink()
    try:
        with corrupted(path, content):
            kind, value = outcome(lambda: SceneFlowDataset(work["sceneflow"], "kitti", seed=0)[0],
                                  (which, folder.name))
    finally:
        if which == "mask.npy":
            path.unlink()
    if kind == "ok":
        assert len(value[0]["points"]) == 8192


def test_sceneflow_empty_cloud_is_a_skippable_frame(copy):
    root = copy("sceneflow")
    folder = root / "KITTI_processed_occ_final"
    shutil.copytree(folder / "000000", folder / "000001")
    for name in ("pc1.npy", "pc2.npy"):
        np.save(folder / "000000" / name, np.zeros((0, 3), np.float32))
    with pytest.raises(DataFormatError, match="000000/pc1.npy: no points"):
        SceneFlowDataset(root, "kitti", seed=0)[0]
    skipping = SceneFlowDataset(root, "kitti", seed=0, skip_bad_frames=True)
    with pytest.warns(UserWarning, match="000000"):
        assert skipping[0]["frame_id"] == "kitti/000001"
    np.save(folder / "000000" / "pc1.npy", np.full((10, 3), 50.0, np.float32))  # all beyond 35 m
    np.save(folder / "000000" / "pc2.npy", np.full((10, 3), 50.0, np.float32))
    with pytest.raises(DataFormatError, match="000000: none of the 10 points is left"):
        SceneFlowDataset(root, "kitti", seed=0)[0]


# ---------------------------------------------------------------- create_data

def _create_data_main():
    spec = importlib.util.spec_from_file_location("create_data_tool", ROOT / "tools" / "create_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.parametrize("dataset", ["kitti", "waymo", "semantickitti", "scannet", "sceneflow"])
def test_create_data_on_an_empty_folder(tmp_path, capsys, monkeypatch, dataset):
    monkeypatch.setenv("PC3D_DEBUG", "0")
    assert _create_data_main()([dataset, str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"create_data: error: {tmp_path}: nothing to index: expected")
    assert not list(tmp_path.iterdir())


@FEW
@given(data=st.data(), which=st.sampled_from(KITTI_FILES[:3]))
def test_fuzz_create_data_kitti(work, data, which, capsys):
    """create_data over a damaged frame: a one-line error (exit 2) or the frame listed as skipped."""
    path = work["kitti"] / which
    with corrupted(path, mutate(path.read_bytes(), data)):
        status = _create_data_main()(["kitti", str(work["kitti"])])
        out = capsys.readouterr()
        report = json.loads(out.out) if status == 0 else None
    for name in ("kitti_infos_train.json", "kitti_infos_val.json", "kitti_infos_trainval.json",
                 "kitti_infos_test.json", "kitti_gt_database_train.json", "kitti_gt_database_train.npz",
                 "kitti_gt_database_train.bin"):
        (work["kitti"] / name).unlink(missing_ok=True)
    if status:
        assert status == 2 and out.err.count("\n") == 1 and "create_data: error:" in out.err
    elif report["train"]["skipped"]:
        assert "000000" in report["train"]["skipped"] and "skipped 1 bad frame" in out.err
    else:
        assert report["train"]["frames"] == 1
