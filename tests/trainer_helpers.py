"""The toy trainer the engine's tests share: the one_thread fixture (import it: it is autouse), make_trainer
(ToyPointNet on ToyShapes, seeded), params, and a model whose loss turns NaN on chosen steps (poisoned_trainer)."""
from __future__ import annotations

import socket
from functools import partial

import pytest
import torch

from pc3d.data.toy import ToyShapes
from pc3d.engine.schedule import WarmupCosine
from pc3d.engine.seeding import seed_everything
from pc3d.engine.settings import TrainSettings
from pc3d.engine.trainer import Trainer
from pc3d.models.toy import ToyPointNet


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and the test machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a gloo process group's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_trainer(run_dir, *, dropout=0.1, train_size=64, augment=True, **settings) -> Trainer:
    seed_everything(0)
    data = {"train_size": train_size, "val_size": 32, "num_points": 32, "augment": augment}
    options = {"max_iters": 12, "batch_size": 8, "log_interval": 4, "eval_interval": 0, "ckpt_interval": 0,
               "tensorboard": False, **settings}
    return Trainer(ToyPointNet(width=16, dropout=dropout), ToyShapes("train", **data),
                   optimizer=partial(torch.optim.AdamW, lr=1e-2), schedule=partial(WarmupCosine, warmup_steps=2),
                   settings=TrainSettings(**options), run_dir=run_dir, val_set=ToyShapes("val", **data), seed=0)


def params(trainer: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.net.parameters()]


class PoisonedLoss(torch.nn.Module):
    """The toy model whose loss is NaN on the steps in `poisoned` (1-based, counted in training forwards)."""

    def __init__(self, net: torch.nn.Module, poisoned: set[int]):
        super().__init__()
        self.net, self.poisoned, self.calls = net, poisoned, 0
        self.norm = torch.nn.BatchNorm1d(3, affine=False)  # running statistics that a NaN batch would spoil

    def forward(self, batch):
        points = batch["points"]
        if self.training:
            self.calls += 1
            if self.calls in self.poisoned:  # NaN from the input on: batch statistics, activations, loss
                points = points * float("nan")
        points = self.norm(points.reshape(-1, 3)).reshape(points.shape)
        return self.net({**batch, "points": points})


class NamedFrames:
    """The trainer's loader with each batch's frame ids ("toy/<index>"), as a dataset of the batch contract has."""

    def __init__(self, loader):
        self.loader = loader

    def __iter__(self):
        for batch in self.loader:
            yield {**batch, "frame_id": [f"toy/{i}" for i in batch["index"].tolist()]}


def poisoned_trainer(run_dir, poisoned: set[int], **settings) -> Trainer:
    trainer = make_trainer(run_dir, dropout=0.0, **settings)
    model = PoisonedLoss(trainer.net, poisoned)
    trainer.model = trainer.net = model
    trainer.loader = NamedFrames(trainer.loader)
    return trainer
