"""The mean teacher under DistributedDataParallel (2 gloo ranks on CPU): the reflectivity prior is fit on every
rank's labelled points, not on rank 0's alone (DDP's broadcast_buffers copies rank 0's buffers over every rank's at
each forward), and it is the same on every rank."""
from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from trainer_helpers import free_port

from pc3d.data import SemanticKittiDataset
from pc3d.data.frame_selection import write_frame_list
from pc3d.data.transforms import GlobalRotation, GlobalScaling
from pc3d.data.transforms.views import SecondView
from pc3d.models.backbones3d.unet import SparseUNet
from pc3d.models.segmentors import SparseSegmentor
from pc3d.models.semi import MeanTeacherSegmentor, ReflectivityPrior
from pc3d.sim.api import simulate_dataset
from pc3d.voxel import DynamicVoxelizer

RANGE = [-19.2, -19.2, -3.2, 19.2, 19.2, 3.2]
STEPS = 2


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = tmp_path_factory.mktemp("skitti")
    simulate_dataset("semantickitti", path, frames=4, seed=0, columns=512, sequence_length=4)
    write_frame_list(path / "labelled.txt", [(0, 0), (0, 1)])  # one labelled frame per rank
    return path


def rank_batch(root: Path, rank: int, step: int) -> dict:
    """Rank r's batch at `step`: labelled frame r and unlabelled frame 2 + r (other points on every rank)."""
    views = [GlobalRotation(0.3), SecondView([GlobalRotation(0.5), GlobalScaling((0.9, 1.1))])]
    data = SemanticKittiDataset(root, sequences=[0], training=True, seed=0, augmentations=views,
                                voxelizer=DynamicVoxelizer([0.4, 0.4, 0.4], RANGE),
                                labelled_frames=root / "labelled.txt")
    data.set_epoch(step)
    return data.collate_fn([data[rank], data[2 + rank]])


def model() -> MeanTeacherSegmentor:
    torch.manual_seed(0)
    unet = partial(SparseUNet, channels=(8, 16), enc_depths=(1,), dec_channels=(16,), dec_depths=(1,))
    return MeanTeacherSegmentor(SparseSegmentor(4, unet, num_classes=20, ignore_index=0), keep=0.5)


def _worker(rank: int, port: int, root: Path, out_dir: Path, errors) -> None:
    from pc3d.engine import distributed

    try:
        torch.set_num_threads(1)
        os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
                           "RANK": str(rank), "LOCAL_RANK": str(rank)})
        info = distributed.init_distributed("cpu", timeout_s=120)  # a lost peer fails the collective, never hangs
        ddp = distributed.wrap_model(model(), info)
        net = distributed.unwrap(ddp).train()
        optimizer = torch.optim.SGD(net.student.parameters(), lr=0.1)
        for step in range(STEPS):
            out = ddp(rank_batch(root, rank, step))
            out["loss"].backward()
            optimizer.step()
            optimizer.zero_grad()
            net.after_optimizer_step()
        torch.save({"prior": net.prior.state_dict(), "step": int(net.step)}, out_dir / f"rank{rank}.pt")
        distributed.destroy()
    except BaseException as exc:  # reported to the parent, which asserts
        errors.put(f"rank {rank}: {type(exc).__name__}: {exc}")
        raise


def test_the_prior_is_fit_on_every_ranks_labelled_points(root, tmp_path):
    """2 ranks, each with its own labelled frame: after 2 steps both ranks hold the prior a single process fits
    on the union of both ranks' labelled points, step by step."""
    ctx = mp.get_context("spawn")  # a fresh interpreter: no OpenMP / numba thread pools inherited through fork
    errors = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, root, tmp_path, errors)) for r in range(2)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(timeout=240)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    assert all(p.exitcode == 0 for p in procs), [errors.get() for _ in range(errors.qsize())]

    union = ReflectivityPrior(20, model().range_edges, ignore_index=0)
    for step in range(STEPS):
        rows = [rank_batch(root, rank, step) for rank in range(2)]
        labelled = [torch.tensor([m.get("labelled", True) for m in b["metadata"]])[b["point_batch"]] for b in rows]
        assert all(0 < int(mask.sum()) < len(mask) for mask in labelled)  # labelled and unlabelled points
        points = torch.cat([b["points"][mask] for b, mask in zip(rows, labelled, strict=True)])
        labels = torch.cat([b["point_labels"][mask] for b, mask in zip(rows, labelled, strict=True)])
        union.update(points[:, :3], points[:, 3], labels)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for rank, saved in enumerate(ranks):
        assert saved["step"] == STEPS
        for key, value in union.state_dict().items():
            total, expected = float(saved["prior"][key].sum()), float(value.sum())
            torch.testing.assert_close(saved["prior"][key], value, rtol=1e-12, atol=1e-9,
                                       msg=f"rank {rank}'s {key} sums to {total}, one process's over both ranks' "
                                           f"points to {expected}")
    for key in union.state_dict():
        assert torch.equal(ranks[0]["prior"][key], ranks[1]["prior"][key]), key
