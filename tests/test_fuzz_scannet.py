"""Fuzzing the ScanNet loader: ply meshes and their headers, label meshes, scene lists.
Every case must end as fuzz_helpers.outcome allows (a pc3d error naming the file, or losses counted).
"""
from __future__ import annotations

import pytest
from fuzz_helpers import FEW, FUZZ, corrupted, fuzz_fixtures, mutate, outcome
from hypothesis import example, given
from hypothesis import strategies as st

from pc3d.data import ScanNetDataset
from pc3d.errors import DataFormatError

pristine, work, copy = fuzz_fixtures("scannet")


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
