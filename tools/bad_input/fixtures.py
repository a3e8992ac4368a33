"""The pristine datasets and checkpoints every case copies, and helpers that corrupt files."""
from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import experiment_checkpoint

from .core import PYTHON, ROOT

# fixtures


def build_fixtures(work: Path, timeout: float) -> dict:
    """Simulated datasets, two seeded checkpoints and a 1-epoch toy training run under <work>/fixtures."""
    fx = work / "fixtures"
    done = fx / "done.json"
    if done.is_file():
        return json.loads(done.read_text())
    fx.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    from pc3d.sim.api import simulate_dataset

    simulate_dataset("kitti", fx / "kitti", frames=3, seed=0, columns=256)
    simulate_dataset("semantickitti", fx / "semantickitti", frames=4, seed=0, sequence_length=2, columns=256)
    simulate_dataset("waymo", fx / "waymo", frames=4, seed=0, sequence_length=2, columns=256)
    simulate_dataset("scannet", fx / "scannet", frames=2, seed=0)
    simulate_dataset("sceneflow", fx / "sceneflow", frames=2, seed=0, columns=256)
    for exp, root in (("centerpoint_sim_kitti", fx / "kitti"), ("sim_semantickitti_seg", fx / "semantickitti"),
                      ("sim_scannet_seg", fx / "scannet")):
        experiment_checkpoint(fx / "ckpt", exp, f"dataset.root={root}", "train.workers=0")
    # a real tools/train.py run (1 epoch of the toy recipe): run folder with config.yaml + checkpoints
    run = subprocess.run([PYTHON, str(ROOT / "tools" / "train.py"), "experiment=toy", "train.max_epochs=1",
                          f"hydra.run.dir={fx / 'toy_run'}", "train.tensorboard=false"],
                         cwd=fx, capture_output=True, text=True, timeout=timeout * 3)
    info = {"seconds": round(time.time() - t0, 1), "toy_rc": run.returncode,
            "toy_tail": (run.stderr or run.stdout).strip().splitlines()[-3:]}
    done.write_text(json.dumps(info))
    return info


# ----------------------------------------------------------------------------------------------------------
# file corruption helpers


def truncate(path: Path, remove: int = 7) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:max(0, len(data) - remove)])


def edit_lines(path: Path, fn: Callable[[list[str]], list[str]]) -> None:
    path.write_text("\n".join(fn(path.read_text().splitlines())) + "\n")


def bin_points(path: Path, columns: int = 4) -> np.ndarray:
    return np.fromfile(path, "<f4").reshape(-1, columns)


def make_fifo(path: Path) -> None:
    if path.exists() or path.is_symlink():
        path.unlink()
    os.mkfifo(path)


def loop_link(path: Path) -> None:
    if path.exists() or path.is_symlink():
        path.unlink()
    os.symlink(path.name, path)


def pq_read(path: Path):
    import pyarrow.parquet as pq

    return pq.read_table(path)


def pq_write(table, path: Path, row_group_size: int | None = None) -> None:
    import pyarrow.parquet as pq

    pq.write_table(table, path, row_group_size=row_group_size)


def pq_set(path: Path, column: str, fn: Callable[[list], list], row_group_size: int | None = None) -> None:
    """Rewrite one column through fn(list of values); a fixed-size list column becomes a variable one."""
    import pyarrow as pa

    table = pq_read(path)
    i = table.schema.get_field_index(column)
    values = fn(table.column(column).to_pylist())
    kind = table.schema.field(i).type
    if pa.types.is_fixed_size_list(kind):
        kind = pa.list_(kind.value_type)
    table = table.set_column(i, pa.field(column, kind), pa.array(values, type=kind))
    pq_write(table, path, row_group_size)


def ply_header_and_body(path: Path) -> tuple[list[str], bytes]:
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    return data[:end].decode("ascii").splitlines(), data[end:]


def ply_write(path: Path, header: list[str], body: bytes) -> None:
    path.write_bytes(("\n".join(header) + "\n").encode("ascii") + body)


def ply_vertex_count(path: Path) -> int:
    header, _ = ply_header_and_body(path)
    return int(next(x for x in header if x.startswith("element vertex")).split()[2])
