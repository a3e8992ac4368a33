"""tools/bench.py's own checks: a row whose two sides disagree is flagged, and a cached-map row refuses to time a
kernel map spconv builds inside it."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from bench import mismatch  # noqa: E402


@pytest.mark.parametrize(("row", "flagged"), [
    ({"case": "SubM forward", "max_rel_diff": 1e-7}, False),
    ({"case": "SubM forward", "max_rel_diff": 0.02}, True),
    ({"case": "SubM bf16 forward", "max_rel_diff": 0.02}, False),  # one bf16 rounding
    ({"case": "SubM bf16 forward", "max_rel_diff": 0.2}, True),
    ({"case": "fwd + bwd", "max_rel_grad_diff": 0.0023}, False),
    ({"case": "fwd + bwd", "max_rel_grad_diff": float("nan")}, True),
    ({"case": "det frame", "same_boxes": False}, True),
    ({"case": "voxelizer", "same_output": True}, False),
    ({"case": "GEMM"}, False),
])
def test_a_row_whose_sides_disagree_is_flagged(row, flagged):
    assert mismatch(row) is flagged


def test_a_cached_map_row_refuses_a_map_spconv_builds():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pytest.importorskip("spconv.pytorch")
    from bench_sparse import _no_map_built, _spconv

    spconv, algo, ops = _spconv()
    coords = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 2], [0, 2, 2, 2]], dtype=torch.int32)
    twin = spconv.SubMConv3d(4, 4, 3, bias=False, indice_key="subm", algo=algo.Native)
    fresh = spconv.SparseConvTensor(torch.randn(3, 4), coords, [4, 4, 4], 1)
    with pytest.raises(RuntimeError, match="built a kernel map"):  # spconv keeps no map on its input tensor
        _no_map_built(ops, lambda: twin(fresh))()
    holding = twin(fresh).replace_feature(torch.randn(3, 4))  # the output of a SubM holds its map
    _no_map_built(ops, lambda: twin(holding))()
