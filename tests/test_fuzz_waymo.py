"""Fuzzing the Waymo v2 loader: damaged parquet components, bad values, missing tables, the info index.
Every case must end as fuzz_helpers.outcome allows (a pc3d error naming the file, or losses counted).
"""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from fuzz_helpers import FEW, FUZZ, corrupted, fuzz_fixtures, mutate, outcome
from hypothesis import given
from hypothesis import strategies as st

from pc3d.data import WaymoDataset
from pc3d.data.create import create_data
from pc3d.errors import DataFormatError

pristine, work, copy = fuzz_fixtures("waymo")


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
            box = annos["box"]  # x, y, z, l, w, h, heading, vx, vy: a null speed is NaN (unknown, no loss)
            assert np.isfinite(box[:, :7]).all() and (box[:, 3:6] >= 0).all() and not np.isinf(box[:, 7:]).any()


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
