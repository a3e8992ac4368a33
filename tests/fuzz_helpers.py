"""Shared by the test_fuzz_<format>.py modules: hypothesis settings, file damage, the outcome rule
(a pc3d error naming the file, or a load whose losses are counted in DataWarnings) and the fixtures that
simulate tiny pristine datasets (tests copy or restore what they corrupt)."""
from __future__ import annotations

import importlib.util
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from pc3d.data.dataset import DataWarning
from pc3d.errors import Pc3dError
from pc3d.sim.api import simulate_dataset

FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FEW = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ROOT = Path(__file__).resolve().parents[1]

_SIMULATE = {  # name -> (format, folder, settings): frames of 256 columns keep every load fast
    "kitti": ("kitti", "kitti", {"frames": 2, "columns": 256}),
    "semantickitti": ("semantickitti", "sk", {"frames": 2, "sequence_length": 2, "columns": 256}),
    "sceneflow": ("sceneflow_kitti", "sf", {"frames": 1, "columns": 256}),
    "scannet": ("scannet", "scannet", {"frames": 1}),
    "waymo": ("waymo", "waymo", {"frames": 2, "sequence_length": 2, "columns": 256}),
}


def fuzz_fixtures(*names: str):
    """(pristine, work, copy): the fixtures of a fuzz module over the named tiny simulated datasets (seed 0).

    pristine (module): {name: root}, never modified; work (module): copies that fuzz tests corrupt and
    restore; copy (test): copy(name) -> a fresh copy of a pristine dataset for one test."""
    @pytest.fixture(scope="module")
    def pristine(tmp_path_factory):
        base = tmp_path_factory.mktemp("pristine")
        out = {}
        for name in names:
            if name == "waymo" and not importlib.util.find_spec("pyarrow"):
                continue
            fmt, folder, kwargs = _SIMULATE[name]
            out[name] = simulate_dataset(fmt, base / folder, seed=0, **kwargs)
        return out

    @pytest.fixture(scope="module")
    def work(pristine, tmp_path_factory):
        base = tmp_path_factory.mktemp("work")
        return {k: Path(shutil.copytree(v, base / k)) for k, v in pristine.items()}

    @pytest.fixture
    def copy(pristine, tmp_path):
        return lambda name: Path(shutil.copytree(pristine[name], tmp_path / name))

    return pristine, work, copy


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
