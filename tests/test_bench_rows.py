"""tools/bench*.py's rows on tiny inputs, nothing timed that matters (fake `timed` / `alternated`, a fake clock):
the per-layer gradient tables reach the suite's files, the GEMM rows keep torch's time out of pc3d's column, seg's
points median is of the timed batches, flow's stage times are medians, and pc3d-against-pc3d ratios are timed in
turn."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import bench  # noqa: E402

import pc3d.sparse as sp  # noqa: E402
from pc3d.voxel import grid_sample  # noqa: E402


def tiny_sweep() -> tuple[np.ndarray, str]:
    """A stand-in for the benchmark sweep: 3,000 points in a 6 x 6 x 4 m box."""
    rng = np.random.default_rng(0)
    return rng.uniform([-3, -3, -2], [3, 3, 2], (3000, 3)).astype(np.float32), "tiny"


def fake_timed(fn, repeats: int = 5, warmup: int = 1) -> float:
    fn()
    return 1e-3


def fake_alternated(times: list[float], calls: list[int]):
    """_common.alternated that runs each fn once and returns `times` (recording how many fns it got)."""
    def alternated(fns, repeats: int = 5, warmup: int = 1) -> list[float]:
        calls.append(len(fns))
        for fn in fns:
            fn()
        return list(times[:len(fns)])
    return alternated


def use_tiny_backbone(monkeypatch) -> list[str]:
    """bench_backbone on the tiny sweep, its fresh-process children answered in-process: the calls they got."""
    import bench_backbone

    calls = []
    monkeypatch.setattr(bench_backbone, "load_benchmark_sweep", tiny_sweep)
    monkeypatch.setattr(bench_backbone, "_in_child", lambda call, env=None: (calls.append(call),
                                                                            {"seconds": 0.01, "peak_mib": 1.0})[1])
    return calls


@pytest.fixture
def tiny_backbone(monkeypatch):
    return use_tiny_backbone(monkeypatch)


def test_the_gradient_tables_are_in_the_suite_json_and_markdown(monkeypatch, tmp_path, tiny_backbone):
    import bench_sparse

    monkeypatch.setattr(bench_sparse, "load_benchmark_sweep", tiny_sweep)
    monkeypatch.setattr(bench_sparse, "_scale_rows", lambda *args, **kwargs: [])  # the timing rows: not this test's
    monkeypatch.setattr(bench, "timed", lambda fn, repeats=5, warmup=1: 1e-3)  # no 2048^3 GEMM run
    json_path, md_path = tmp_path / "sparse.json", tmp_path / "sparse.md"
    bench.main(["sparse", "--quick", "--json", str(json_path), "--markdown", str(md_path)])
    summary = next(r for r in json.loads(json_path.read_text())["rows"] if "weight-gradient" in r["case"])
    layers = summary["table"]["rows"]
    assert len(layers) > 5 and all("pc3d_norm_rel" in r and "pc3d_kernel_only" in r for r in layers)
    md = md_path.read_text()
    assert "weight-gradient error against pc3d float64" in md and "pc3d kernel only" in md
    assert all(f"| {r['layer']} |" in md for r in layers)


def test_the_gemm_rows_keep_torch_time_out_of_the_pc3d_column(monkeypatch):
    import bench_sparse

    layer = {"layer": "conv1", "conv": "4->16 subm", "sites": 10, "pc3d_norm_rel": 1e-6, "spconv_norm_rel": 2e-6,
             "pc3d_relu_flips": 0, "spconv_relu_flips": 0, "pc3d_kernel_only": 1e-7, "gemm_kernel_only": 2e-7}
    monkeypatch.setattr(bench_sparse, "load_benchmark_sweep", tiny_sweep)
    monkeypatch.setattr(bench_sparse, "_scale_rows", lambda *args, **kwargs: [])
    monkeypatch.setattr(bench_sparse, "gradient_table", lambda voxel, control: [layer])
    rows = bench_sparse.run_sparse(lambda fn, repeats=5, warmup=1: 0.25, quick=True)
    gemm = [r for r in rows if "GEMM" in r["case"]]
    assert gemm and all("pc3d_s" not in r and "pc3d" not in r["ref"] for r in gemm)
    assert all("torch" in r["ref"] and r["ref_s"] == 0.25 for r in gemm if "ref_s" in r)
    for line in bench.markdown("sparse", gemm).splitlines()[4:]:
        assert line.split(" | ")[1] == ""  # the "pc3d (ms)" cell


def test_the_seg_points_median_is_of_the_timed_batches(monkeypatch):
    import bench_seg

    import pc3d.engine.runner
    import pc3d.sim.api

    class Data(list):
        def collate_fn(self, samples):
            return {}

    data = Data({"points": np.zeros((n, 4), np.float32)} for n in (1000, 10, 20, 30))  # quick: 1 warm-up batch

    def recipe(experiment, root):
        cfg = OmegaConf.create({"experiment_name": experiment, "train": {"batch_size": 1}, "splits": {"train": "t"},
                                "dataset": {"voxel_size": [0.1], "point_cloud_range": [0.0]}})
        return cfg, torch.nn.Linear(1, 1), None

    monkeypatch.setattr(pc3d.sim.api, "simulate_dataset", lambda *args, **kwargs: Path("."))
    monkeypatch.setattr(pc3d.engine.runner, "build_dataset", lambda *args, **kwargs: data)
    monkeypatch.setattr(bench_seg, "_recipe", recipe)
    monkeypatch.setattr(bench_seg, "_step", lambda *args: None)
    rows = bench_seg.run_seg(quick=True)
    assert all(r["batch"] == "1 scans, 20 points (median)" for r in rows)  # 10, 20, 30: not the warm-up's 1,000


def test_the_flow_stage_times_are_medians_of_the_timed_calls(monkeypatch):
    import bench_flow

    from pc3d.infer.stream import StageTimer

    clock = [0.0]  # a fake clock: each call's stage takes 1, 1, then 10 s; the model's own code 0.5 s
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    stage_s = iter([1.0, 1.0, 10.0])

    class Stage(torch.nn.Module):
        def forward(self, x):
            clock[0] += next(stage_s)
            return x

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stage = Stage()

        def forward(self, x):
            clock[0] += 0.5
            return self.stage(x)

    model = Model()
    t, stages, other = bench_flow._timed_by_stage(bench.timed, StageTimer(model, torch.device("cpu")),
                                                  lambda: model(0), 3)
    assert (t, stages, other) == (1.5, {"stage": 1.0}, 0.5)  # medians all (the stage's mean is 4 s)


def test_the_backbone_bf16_ratio_to_float32_is_timed_in_turn(monkeypatch, tiny_backbone):
    import bench_backbone

    calls = []
    monkeypatch.setattr(bench_backbone, "alternated", fake_alternated([2.0, 1.0], calls), raising=False)
    rows = bench_backbone.backbone_rows(0.2, fake_timed, 1, quick=True)
    bf16 = next(r for r in rows if "bf16 autocast" in r["case"])
    assert calls == [2] and bf16["pc3d_s"] == 1.0 and bf16["vs_pc3d_float32"] == 2.0


def test_the_snn_rows_time_both_variants_in_turn(monkeypatch):
    import bench_snn

    calls = []
    monkeypatch.setattr(bench_snn, "load_benchmark_sweep", tiny_sweep)
    monkeypatch.setattr(bench_snn, "alternated", fake_alternated([1.0, 4.0], calls), raising=False)
    rows = bench_snn.run_snn(fake_timed, quick=True)
    assert calls == [2] * len(rows)
    assert all(r["pc3d_s"] == 1.0 and r["speedup"] == 4.0 and r["same_outputs"] for r in rows)


def test_the_generic_grouped_kernel_rows_are_timed_in_turn(monkeypatch):
    import bench_sparse

    coords_np, shape, _, _ = grid_sample(tiny_sweep()[0], 0.4)
    coords = torch.from_numpy(coords_np)
    torch.manual_seed(0)
    x = sp.SparseTensor(torch.randn(len(coords), 64), coords, shape, 1)
    conv = sp.SubMConv3d(64, 64, 3, groups=64, bias=False)
    calls = []
    monkeypatch.setattr(bench_sparse, "alternated", fake_alternated([1.0, 4.0], calls))
    rows = bench_sparse._grouped_generic_rows(x, conv, torch.randn(len(coords), 64), "tiny", 1)
    assert calls == [2, 2] and all(r["pc3d_s"] == 1.0 and r["speedup"] == 4.0 for r in rows)
