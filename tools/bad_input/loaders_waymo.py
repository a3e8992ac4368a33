"""Loader cases: Waymo v2 parquet components."""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from .core import Ctx, case, expect
from .fixtures import pq_read, pq_set, pq_write, truncate
from .loaders_kitti import load_all


def _waymo(root: Path, split="training", **kw):
    from pc3d.data import WaymoDataset

    return WaymoDataset(root, split, training=False, **kw)


def _wc(root: Path, component: str, split="training") -> Path:
    return next((root / split / component).glob("*.parquet"))


def _w_case(name: str, corrupt: Callable[[Path], object], names, valid=None, legit=False, **kw):
    @case("loaders", name)
    def run(ctx: Ctx):
        root = ctx.copy("waymo")
        seg = _wc(root, "lidar").stem
        corrupt(root)
        return expect(lambda: load_all(_waymo(root, **kw)), [*names, seg], valid(root) if valid else None, legit)
    return run


def _box_field(r: Path, field: str, fn):
    pq_set(_wc(r, "lidar_box"), f"[LiDARBoxComponent].{field}", lambda v: [fn(i, x) for i, x in enumerate(v)])


def _lidar_field(r: Path, field: str, fn):
    pq_set(_wc(r, "lidar"), f"[LiDARComponent].{field}", lambda v: [fn(i, x) for i, x in enumerate(v)],
           row_group_size=1)


def _w_zero_rows(r: Path, component: str, row_group_size=None):
    path = _wc(r, component)
    table = pq_read(path)
    pq_write(table.slice(0, 0), path, row_group_size)


def _w_drop_column(r: Path, component: str, column: str):
    path = _wc(r, component)
    table = pq_read(path)
    pq_write(table.drop([column]), path, 1 if component == "lidar" else None)


def _w_extra_laser(r: Path):
    """Frame 0 gets a second row (a copy of its TOP row) as laser 3 (SIDE_LEFT), which has no calibration."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = _wc(r, "lidar")
    table = pq_read(path)
    row = table.slice(0, 1)
    i = row.schema.get_field_index("key.laser_name")
    side = row.set_column(i, row.schema.field(i), pa.array([3], type=row.schema.field(i).type))
    with pq.ParquetWriter(path, table.schema) as writer:
        writer.write_table(pa.concat_tables([row, side]))
        for k in range(1, table.num_rows):
            writer.write_table(table.slice(k, 1))


def _w_duplicate_rows(r: Path):
    import pyarrow as pa

    path = _wc(r, "lidar")
    table = pq_read(path)
    pq_write(pa.concat_tables([table.slice(0, 1), table]), path, 2)


_w_case("waymo/lidar_box-missing", lambda r: _wc(r, "lidar_box").unlink(), ["lidar_box"])
_w_case("waymo/lidar_box-zero-bytes", lambda r: _wc(r, "lidar_box").write_bytes(b""), ["lidar_box"])
_w_case("waymo/lidar_box-no-size-column", lambda r: _w_drop_column(
    r, "lidar_box", "[LiDARBoxComponent].box.size.x"), ["box.size.x"])
_w_case("waymo/lidar_box-negative-size", lambda r: _box_field(r, "box.size.y", lambda i, x: -abs(x) if i == 0 else x),
        ["lidar_box"])
_w_case("waymo/lidar_box-nan-center", lambda r: _box_field(r, "box.center.x", lambda i, x: float("nan") if i == 0
                                                         else x), ["lidar_box"])
_w_case("waymo/lidar_box-unknown-type-9", lambda r: _box_field(r, "type", lambda i, x: 9 if i == 0 else x),
        ["lidar_box", "type"])
_w_case("waymo/lidar_calibration-missing", lambda r: _wc(r, "lidar_calibration").unlink(), ["lidar_calibration"])
_w_case("waymo/lidar_calibration-extrinsic-15", lambda r: pq_set(
    _wc(r, "lidar_calibration"), "[LiDARCalibrationComponent].extrinsic.transform", lambda v: [x[:15] for x in v]),
    ["lidar_calibration"])
_w_case("waymo/lidar_calibration-no-min-column", lambda r: _w_drop_column(
    r, "lidar_calibration", "[LiDARCalibrationComponent].beam_inclination.min"), ["beam_inclination.min"])
_w_case("waymo/lidar-zero-rows", lambda r: _w_zero_rows(r, "lidar", 1), ["lidar"])
_w_case("waymo/lidar-truncated", lambda r: truncate(_wc(r, "lidar"), 300), ["lidar"])
_w_case("waymo/lidar-random-bytes", lambda r: _wc(r, "lidar").write_bytes(os.urandom(4096)), ["lidar"])
_w_case("waymo/lidar-shape-mismatch", lambda r: _lidar_field(
    r, "range_image_return1.shape", lambda i, x: [x[0], x[1] + 1, x[2]] if i == 1 else x), ["lidar"])
_w_case("waymo/lidar-nan-range", lambda r: _lidar_field(
    r, "range_image_return1.values", lambda i, x: [float("nan")] + x[1:] if i == 0 else x), ["lidar"])
_w_case("waymo/lidar-laser-without-calibration", lambda r: _w_extra_laser(r), ["laser"])
_w_case("waymo/lidar-duplicate-frame-rows", _w_duplicate_rows, ["lidar"])
_w_case("waymo/split-folder-missing", lambda r: None, ["validation", "testing"], split="testing")
_w_case("waymo/skip-bad-frames-after-bad-boxes", lambda r: _w_drop_column(
    r, "lidar_box", "[LiDARBoxComponent].box.heading"), ["box.heading"], skip_bad_frames=True)


@case("loaders", "waymo/index-json-not-json")
def _(ctx):
    root = ctx.copy("waymo")
    (root / "waymo_infos_training.json").write_text("{not json")
    return expect(lambda: load_all(_waymo(root)), ["waymo_infos_training.json"])


@case("loaders", "waymo/index-json-wrong-format")
def _(ctx):
    root = ctx.copy("waymo")
    (root / "waymo_infos_training.json").write_text(json.dumps({"format": "other", "version": 1, "segments": []}))
    return expect(lambda: load_all(_waymo(root)), ["waymo_infos_training.json"])


@case("loaders", "waymo/lidar_box-zero-rows-legit")
def _(ctx):
    root = ctx.copy("waymo")
    _w_zero_rows(root, "lidar_box")

    def check(samples):
        ok = len(samples) == 2 and all(len(s["gt_boxes"]) == 0 and len(s["points"]) > 0 for s in samples)
        return ok, f"{len(samples)} frames, 0 boxes each, points kept"
    return expect(lambda: load_all(_waymo(root)), [], check, legit=True)
