"""tools/bench*.py without spconv (made unimportable, as on a machine without it): the sparse, voxel and det suites
keep pc3d's side of every row against spconv, the reference column saying it is unavailable, instead of crashing
(as the Open3D-ML rows do where Open3D-ML is missing). Tiny inputs, fake timers: nothing is timed."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_bench_rows import fake_timed, tiny_sweep, use_tiny_backbone  # noqa: E402

import pc3d.sparse as sp  # noqa: E402


@pytest.fixture
def no_spconv(monkeypatch):
    """`import spconv...` raises ModuleNotFoundError, and pc3d's spconv backend reports itself unavailable."""
    from pc3d.sparse import backend

    for name in ["spconv", *(m for m in sys.modules if m.startswith("spconv."))]:
        monkeypatch.setitem(sys.modules, name, None)
    backend._spconv_or_error.cache_clear()  # it holds the import's outcome
    yield
    backend._spconv_or_error.cache_clear()


def _spconv_rows_are_pc3d_only(rows: list[dict]) -> list[dict]:
    against = [r for r in rows if "spconv" in str(r.get("ref"))]
    assert against and all(r["ref"] == "spconv unavailable: ModuleNotFoundError" for r in against)
    assert all(r.get("ref_s") is None and r.get("speedup") is None for r in against)
    return against


def test_the_sparse_rows_keep_pc3d_side_without_spconv(monkeypatch, no_spconv):
    import bench_sparse

    children = use_tiny_backbone(monkeypatch)
    gemm = {torch.float32: 100.0, torch.bfloat16: None}
    rows = bench_sparse._scale_rows(tiny_sweep()[0], 0.2, fake_timed, 1, gemm, quick=True)
    against = _spconv_rows_are_pc3d_only(rows)
    assert len(against) >= 7  # map, SubM fwd, fwd + bwd, strided, three backbone rows
    assert all(isinstance(r["pc3d_s"], float) for r in against)
    assert children and not any("spconv" in call for call in children)  # no spconv child process either


def test_the_gradient_table_keeps_pc3d_columns_without_spconv(monkeypatch, no_spconv):
    from bench_gradients import gradient_summary, gradient_table

    use_tiny_backbone(monkeypatch)
    layers = gradient_table(0.1, control=False)
    assert layers and not any(k.startswith("spconv") for r in layers for k in r)
    row = gradient_summary(0.1, layers)
    assert row["ref"] == "spconv unavailable: ModuleNotFoundError" and row["grad_norm_rel"] >= 0
    assert "spconv" not in " ".join(row["table"]["columns"].values())


def test_the_hard_voxelizer_row_keeps_pc3d_side_without_spconv(no_spconv):
    import bench_voxel

    points = np.c_[tiny_sweep()[0], np.zeros(3000, np.float32)]
    row = bench_voxel._hard(fake_timed, points, 0.2, 2, 1)
    assert _spconv_rows_are_pc3d_only([row]) and row["pc3d_s"] == 1e-3 and row["voxels"] > 0


def test_the_det_rows_keep_the_native_side_without_spconv(monkeypatch, no_spconv):
    import bench_det

    sample = {"points": np.zeros((5, 4), np.float32)}
    monkeypatch.setattr(bench_det, "_setup", lambda: (None, lambda samples: {"voxels": np.zeros((3, 5, 4))},
                                                      sample, None))
    engines = []

    def run_frame(model, collate, sample, timer, backend):  # the real one's engine switch, a fixed frame
        sp.set_backend(backend)
        sp.set_backend("auto")
        engines.append(backend)
        pred = {"boxes": np.zeros((1, 7)), "scores": np.ones(1), "labels": np.ones(1, np.int64)}
        return pred, {**dict.fromkeys(bench_det.STAGES, 1e-3), "total": 1e-2}

    monkeypatch.setattr(bench_det, "_run_frame", run_frame)
    monkeypatch.setattr(bench_det, "contention_row", lambda quick: {"case": "2 processes", "pc3d_s": 1.0})
    rows = bench_det.run_det(None, quick=True)
    assert set(engines) == {"native"}
    against = _spconv_rows_are_pc3d_only(rows)
    assert len(against) == 2 + len(bench_det.STAGES) and all(r["pc3d_s"] > 0 for r in against)


def test_the_open3d_voxel_rows_keep_pc3d_side_without_open3d(monkeypatch):
    import bench_voxel

    monkeypatch.setitem(sys.modules, "open3d", None)  # import open3d -> ModuleNotFoundError
    points = np.c_[tiny_sweep()[0], np.zeros(3000, np.float32)]
    rows = [bench_voxel._dynamic(fake_timed, points, 0.2, 2, 1),
            bench_voxel._grid_sample(fake_timed, points, 0.2, 2, 1)]
    assert all(r["ref"].startswith("Open3D unavailable: ") and r["pc3d_s"] == 1e-3 and r["voxels"] > 0
               for r in rows)


def test_the_wide_row_keeps_pc3d_side_without_spconv():
    import bench_sparse

    from pc3d.voxel import grid_sample

    coords, shape, _, _ = grid_sample(tiny_sweep()[0], 0.1)
    row = bench_sparse._wide_row(torch.from_numpy(coords), shape, fake_timed, 1, 100.0, None, None,
                                 "spconv unavailable: ModuleNotFoundError")
    assert row["ref"].startswith("spconv unavailable") and row["pc3d_s"] == 1e-3 and row["gflops"] > 0
    assert "256->256" in row["case"] and "sites" in row["case"]
