"""Mean teacher for label-efficient segmentation (Less is More), around any voxel segmentor.

    batch       points: the teacher's (weakly augmented) view; points2: the student's stronger view of the same
                points, row by row (pc3d.data.transforms.views.SecondView); unlabelled frames have all-ignored
                point_labels and metadata["labelled"] False (SemanticKittiDataset(labelled_frames=...))
    teacher     EMA of the student (pc3d.models.semi.ema_update, after every optimizer step the trainer applies:
                `after_optimizer_step`), eval mode, no gradient: class probabilities of every point of the
                unlabelled frames; teacher "fixed": a trained supervised run (init_from=<run>), never updated,
                labels for a student that starts afresh (self-training, the student sees every scan);
                teacher_flips: its probabilities averaged over the scan and its mirror images in x, y and both
                (pc3d.data.batch.mirrored)
    pseudo      reflectivity prior (fit on the labelled frames' points only, every rank's) -> class-range thresholds
                -> hard labels where sure, soft targets where middling (pc3d.models.semi.pseudo_labels)
    student     supervised loss (the segmentor's own: CE + Lovasz) on the labelled frames
                + unlabelled_weight x ramp(step) x (CE on hard pseudo labels + confidence-weighted KL to the
                soft targets); ramp is 0 for the first warmup_steps (the teacher does not run), then rises as
                exp(-5 (1 - t)^2) over rampup_steps (Tarvainen and Valpola's sigmoid ramp-up) to 1;
                pseudo_loss "segmentor": the hard pseudo labels get the segmentor's own loss (CE + Lovasz on voxels)
    mixes       mix_weight > 0: every unlabelled scan swaps areas of inclination with a labelled scan of the batch
                (LaserMix, pc3d.models.semi.laser_mix); the student sees its view and the mixes in one pass, and
                the mixes learn the labelled scan's labels and the pseudo labels (+ mix_weight x ramp x its loss)

Steps. `step` counts the optimizer steps applied (a buffer: checkpointed, resumed): the trainer calls
`after_optimizer_step()` after each one (not after an accumulation micro-batch, not after a skipped step), which
advances `step` to n and moves the teacher towards the student just stepped with alpha(n) = min(1 - 1 / (n + 1),
max_alpha): 0.5, 0.67, 0.75, ..., max_alpha from n = 99 at 0.99. At step 0 the teacher is the student (alpha 0), as
built or as init_from loaded both; init_from of a supervised run starts `step` at 0. A forward only reads `step`
(alpha, warm-up, ramp-up, the LaserMix turn): the micro-batches of one step see the same teacher and factors, and a
step the trainer skips leaves the teacher as it was.

Several processes (DDP). Every buffer this model accumulates changes the same way on every rank, so DDP's
broadcast_buffers (rank 0's buffers copied over every rank's at each forward) loses nothing: the reflectivity prior
adds every rank's labelled points (its update sums them over the ranks, pseudo_labels' module doc), and `step` counts
the optimizer steps, which every rank applies or skips together. The class-range thresholds are no buffers: each
rank's come from its own batch.

Train mode: {"loss", "loss_sup", "loss_pseudo", "pseudo_share" (share of unlabelled points with a hard label),
"alpha" (alpha(step), the factor of the update that made the teacher labelling this step; 1 for a fixed teacher),
"ramp", "loss_mix" (with mixes)}. Eval mode: an EMA teacher's predictions; with a fixed teacher the student's (the
teacher is the run it started from). An EMA teacher helps only once its student has nearly settled: over a short
one-cycle run a 0.99 average lags it (the README has the figures).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from pc3d.data.batch import cloud_view, mirrored
from pc3d.errors import ConfigError, DataFormatError
from pc3d.models.segmentors.point_head import voxel_labels
from pc3d.models.semi.laser_mix import concat_batches, laser_mix
from pc3d.models.semi.pseudo_labels import (
    IGNORE,
    ReflectivityPrior,
    adjust,
    class_range_thresholds,
    ema_update,
    pseudo_targets,
    range_band,
)

FLIPS = ((), (0,), (1,), (0, 1))  # the scan and its mirror images in x, y and both


def _check_mirror_symmetric(point_cloud_range: Sequence[float] | None) -> None:
    """teacher_flips mirrors voxel coordinates in their grid (pc3d.data.batch.mirrored): on a grid not centred on
    the sensor that is a mirror about the grid's centre, whose voxels hold other points than the mirrored scan's."""
    if point_cloud_range is None or len(point_cloud_range) != 6:
        raise ConfigError("teacher_flips needs the voxelizer's point_cloud_range (6 numbers) to check that its "
                          f"grid is symmetric about the sensor, got {point_cloud_range!r}")
    low, high = [float(v) for v in point_cloud_range[:2]], [float(v) for v in point_cloud_range[3:5]]
    if any(lo != -hi for lo, hi in zip(low, high, strict=True)):
        raise ConfigError(f"teacher_flips mirrors through the sensor only on a grid symmetric about it in x and y; "
                          f"point_cloud_range {list(point_cloud_range)} is not (x_min = -x_max, y_min = -y_max)")


def check_second_view(batch: dict) -> None:
    """DataFormatError naming the frame when a sample's points2 is not its points row by row (a different count:
    a transform after SecondView dropped or added rows of one cloud only)."""
    if "points2" not in batch or "point_offsets2" not in batch:
        raise DataFormatError(None, "the mean teacher trains on points2, the student's view of the points "
                                    "(pc3d.data.transforms.views.SecondView among the augmentations)")
    counts, counts2 = torch.diff(batch["point_offsets"]), torch.diff(batch["point_offsets2"])
    for b in torch.nonzero(counts != counts2).flatten().tolist():
        frame = batch["frame_id"][b] if "frame_id" in batch else None
        raise DataFormatError(frame, f"points2 has {int(counts2[b])} rows for {int(counts[b])} points: the student's "
                                     "view must be the points row by row (SecondView); a transform after it dropped "
                                     "or added rows of one cloud only")


class MeanTeacherSegmentor(nn.Module):
    """student: a SparseSegmentor (built). unlabelled_weight: of the pseudo-label loss. keep: share of each
    (class, range band) cell's unlabelled points that get a hard label. min_confidence: the least confidence of a
    hard label, whatever the cell's share. soft_margin: below the cell's threshold,
    the band of soft targets. range_edges: range bands (m). beta: weight of the reflectivity prior.
    remission_column: the points column holding remission. max_alpha: the EMA's ceiling. warmup_steps: steps
    of supervised training before the first pseudo label (a teacher that has learnt nothing labels
    nothing); rampup_steps: steps over which the pseudo-label weight then rises to unlabelled_weight.
    pseudo_loss: "ce" or "segmentor" (see above). mix_weight: of the LaserMix loss (0: no mixes); mix_areas: the
    counts of inclination areas a pair is cut into, one drawn per pair. teacher: "ema" (the mean teacher) or
    "fixed" (the weights of a supervised run loaded by `init_from`, never updated; the student starts from its own
    initialisation and is the model evaluated). teacher_flips: the teacher's probabilities are the mean over the
    scan and its three mirror images (four teacher passes a step); the voxel coordinates are mirrored in their grid,
    the mirror through the sensor only on a grid symmetric about it, so it needs the voxelizer's point_cloud_range
    (x_min, y_min, z_min, x_max, y_max, z_max) with x_min = -x_max and y_min = -y_max."""

    task = "segmentation"

    def __init__(self, student: nn.Module, unlabelled_weight: float = 1.0, keep: float = 0.5,
                 min_confidence: float = 0.0, soft_margin: float = 0.1,
                 range_edges: Sequence[float] = (0, 10, 20, 30, 40, 50), beta: float = 1.0, remission_column: int = 3,
                 max_alpha: float = 0.99, warmup_steps: int = 0, rampup_steps: int = 0, pseudo_loss: str = "ce",
                 mix_weight: float = 0.0, mix_areas: Sequence[int] = (2, 3, 4, 5, 6), teacher: str = "ema",
                 teacher_flips: bool = False, point_cloud_range: Sequence[float] | None = None):
        super().__init__()
        self.student = student
        self.teacher = copy.deepcopy(student).requires_grad_(False)
        self.unlabelled_weight, self.keep, self.soft_margin, self.beta = unlabelled_weight, keep, soft_margin, beta
        self.min_confidence = min_confidence
        self.remission_column, self.max_alpha, self.range_edges = remission_column, max_alpha, list(range_edges)
        if warmup_steps < 0 or rampup_steps < 0:
            raise ConfigError(f"warmup_steps and rampup_steps must be >= 0, got {warmup_steps}, {rampup_steps}")
        self.warmup_steps, self.rampup_steps = int(warmup_steps), int(rampup_steps)
        if pseudo_loss not in ("ce", "segmentor"):
            raise ConfigError(f"pseudo_loss must be 'ce' or 'segmentor', got {pseudo_loss!r}")
        self.pseudo_loss = pseudo_loss
        if mix_weight < 0 or not mix_areas or any(int(a) < 2 for a in mix_areas):
            raise ConfigError(f"mix_weight must be >= 0 and mix_areas counts >= 2, got {mix_weight}, {list(mix_areas)}")
        self.mix_weight, self.mix_areas = float(mix_weight), [int(a) for a in mix_areas]
        if getattr(student, "voxel_encoder", None) is not None and (mix_weight > 0 or teacher_flips):
            raise ConfigError("LaserMix (mix_weight > 0) and teacher_flips read a Cartesian grid's voxels (their mean "
                              "points, their mirrored coords): a student with a voxel_encoder (Cylinder3D) has neither")
        if teacher not in ("ema", "fixed"):
            raise ConfigError(f"teacher must be 'ema' or 'fixed', got {teacher!r}")
        self.fixed_teacher = teacher == "fixed"
        if teacher_flips:
            _check_mirror_symmetric(point_cloud_range)
        self.flips = FLIPS if teacher_flips else ((),)
        if self.fixed_teacher:  # set by pretrained_state: a fixed teacher must be a trained one
            self.register_buffer("teacher_trained", torch.zeros((), dtype=torch.bool))
        self.num_classes, self.ignore_index = student.num_classes, student.ignore_index
        self.prior = ReflectivityPrior(self.num_classes, self.range_edges, self.ignore_index)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # the teacher always predicts with its (EMA) running statistics
        return self

    def pretrained_state(self, state: dict) -> dict:
        """This model's state_dict starting from a checkpoint's weights (`init_from`): a mean teacher's own as
        they are; a supervised run of the student's model in the teacher, and in the student too unless the teacher
        is fixed (then the student keeps its own initialisation), everything else (step, reflectivity prior) as it
        is now."""
        if any(key.startswith("student.") for key in state):
            return state
        own = {k: v for k, v in self.state_dict().items() if not k.startswith("teacher.")}
        if self.fixed_teacher:
            own["teacher_trained"] = torch.ones((), dtype=torch.bool)
        else:
            own |= {f"student.{k}": v for k, v in state.items()}
        return own | {f"teacher.{k}": v for k, v in state.items()}

    def ramp(self, step: int) -> float:
        """The pseudo-label loss's factor at `step` (0-based): 0 during warm-up, then exp(-5 (1 - t)^2) with t
        the share of the ramp-up done, 1 after it."""
        if step < self.warmup_steps:
            return 0.0
        if step >= self.warmup_steps + self.rampup_steps:
            return 1.0
        t = (step - self.warmup_steps) / self.rampup_steps
        return math.exp(-5.0 * (1.0 - t) ** 2)

    def alpha(self, step: int) -> float:
        """The EMA factor of the teacher's update that brings `step` to this value: min(1 - 1 / (step + 1),
        max_alpha), 0 at step 0 (the teacher is the student); 1 for a fixed teacher."""
        return 1.0 if self.fixed_teacher else min(1.0 - 1.0 / (step + 1), self.max_alpha)

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """The model contract's hook, called by the trainer after every optimizer step it applied: one more step,
        and the EMA teacher moves towards the student as it is now (a fixed teacher never moves)."""
        self.step += 1
        if not self.fixed_teacher:
            ema_update(self.teacher, self.student, int(self.step), self.max_alpha)

    def evaluated(self) -> nn.Module:
        """The segmentor that predicts in eval mode: the student beside a fixed teacher, else the (EMA) teacher."""
        return self.student if self.fixed_teacher else self.teacher

    def class_probabilities(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The evaluated segmentor's (test-time augmentation, pc3d.models.tta)."""
        return self.evaluated().class_probabilities(batch)

    def predictions(self, batch: dict, scores: torch.Tensor, mapped: torch.Tensor) -> list[dict]:
        return self.evaluated().predictions(batch, scores, mapped)

    def forward(self, batch: dict):
        if not self.training:
            return self.evaluated()(batch)
        if self.fixed_teacher and not bool(self.teacher_trained):
            raise ConfigError("teacher='fixed' labels with a trained run: start with init_from=<a supervised run of "
                              "the student's model>")
        check_second_view(batch)
        alpha, ramp = self.alpha(int(self.step)), self.ramp(int(self.step))  # no state changes here: see Steps
        labelled = torch.tensor([m.get("labelled", True) for m in batch["metadata"]], device=batch["points"].device)
        point_labelled = labelled[batch["point_batch"]]
        self.prior.update(batch["points"][point_labelled, :3], batch["points"][point_labelled, self.remission_column],
                          batch["point_labels"][point_labelled])

        view = cloud_view(batch, "points2") | {"point_labels": batch["point_labels"]}
        x = self.student.voxels(view)
        unlabelled = ~point_labelled & (batch["point_to_voxel"] >= 0) & (view["point_to_voxel"] >= 0)
        teaching = ramp > 0.0 and bool(unlabelled.any())
        if teaching:
            with torch.no_grad():
                prob, hard, soft = self.pseudo_labels(batch, unlabelled)
            taught = batch["point_labels"].clone()  # labels where labelled, hard pseudo labels where sure
            taught[unlabelled] = torch.where(hard != IGNORE, hard, torch.full_like(hard, self.ignore_index))
        pairs = self.mix_pairs(labelled) if teaching and self.mix_weight > 0 else []
        if pairs:  # the student's view and its LaserMix mixes in one pass
            mixed, mixed_labels = laser_mix(
                x, voxel_labels(view["point_to_voxel"], taught, len(x.feats), self.num_classes, self.ignore_index),
                pairs, [self.mix_areas[int(i)] for i in torch.randint(len(self.mix_areas), (len(pairs),))])
            feats = self.student.backbone(concat_batches(x, mixed)).feats
            feats, mixed_feats = feats[:len(x.feats)], feats[len(x.feats):]
        else:
            feats = self.student.backbone(x).feats
        supervised = self.student.losses(view, feats, x.feats)
        out = {"loss_sup": supervised["loss"].detach(), "alpha": torch.tensor(alpha), "ramp": torch.tensor(ramp)}
        if not teaching:
            return out | {"loss": supervised["loss"], "loss_pseudo": torch.zeros(()), "pseudo_share": torch.zeros(())}

        point_voxel = torch.where(unlabelled, view["point_to_voxel"], torch.full_like(view["point_to_voxel"], -1))
        logits = self.student.point_logits(view, feats, x.feats, point_voxel).float()
        if self.pseudo_loss == "segmentor":  # the student's own loss (CE + Lovasz) on its voxels' pseudo labels
            only_pseudo = torch.where(point_labelled, torch.full_like(taught, self.ignore_index), taught)
            ce = self.student.losses(view | {"point_labels": only_pseudo}, feats, x.feats)["loss"]
        else:
            ce = F.cross_entropy(logits, hard, ignore_index=IGNORE) if (hard != IGNORE).any() else logits.sum() * 0
        kl = (F.kl_div(logits.log_softmax(1), prob.float(), reduction="none").sum(1) * soft).sum() / len(soft)
        pseudo = ce + kl
        loss = supervised["loss"] + self.unlabelled_weight * ramp * pseudo
        out |= {"loss_pseudo": pseudo.detach(), "pseudo_share": (hard != IGNORE).float().mean()}
        if pairs:
            mix = self.student.loss(self.student.head(mixed_feats), mixed_labels)["loss"]
            loss = loss + self.mix_weight * ramp * mix
            out["loss_mix"] = mix.detach()
        return out | {"loss": loss}

    def pseudo_labels(self, batch: dict, unlabelled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(the teacher's adjusted probabilities [P, K], hard labels [P] (IGNORE where unsure), soft-target
        weights [P]) of the P points where `unlabelled`, seen in the teacher's view."""
        points, remission = batch["points"][unlabelled, :3], batch["points"][unlabelled, self.remission_column]
        prob = self.point_probabilities(self.teacher, batch, unlabelled, self.flips)
        prob = adjust(prob, self.prior.likelihood(points, remission), self.beta)
        if 0 <= self.ignore_index < self.num_classes:  # never a pseudo label
            prob[:, self.ignore_index] = 0
            prob = prob / prob.sum(1, keepdim=True).clamp(min=1e-12)
        band = range_band(points, self.range_edges)
        confidence, pred = prob.max(1)
        tau = class_range_thresholds(confidence, pred, band, self.num_classes, len(self.range_edges), self.keep,
                                     self.min_confidence)
        hard, soft = pseudo_targets(prob, band, tau, self.soft_margin)
        return prob, hard, soft

    @torch.no_grad()
    def pseudo_label_confusion(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Analysis only (tools/pseudo_quality.py): int64 [K, K] counts, rows the batch's point_labels (labels the
        teacher never reads here), columns the teacher's adjusted argmax over every point inside a voxel of its
        view; and the same over the points given a hard pseudo label. Every frame of the batch is taught as an
        unlabelled one (thresholds per batch, as in training)."""
        inside = batch["point_to_voxel"] >= 0
        prob, hard, _ = self.pseudo_labels(batch, inside)
        labels = batch["point_labels"][inside].to(prob.device)
        cells = self.num_classes * self.num_classes
        everything = torch.bincount(labels * self.num_classes + prob.argmax(1), minlength=cells)
        sure = hard != IGNORE
        given = torch.bincount(labels[sure] * self.num_classes + hard[sure], minlength=cells)
        return everything.view(self.num_classes, -1).cpu(), given.view(self.num_classes, -1).cpu()

    def mix_pairs(self, labelled: torch.Tensor) -> list[tuple[int, int]]:
        """(labelled entry, unlabelled entry) pairs of the batch to mix: every unlabelled scan with a labelled one,
        taken in turn (the turn moves with the step)."""
        sure = torch.nonzero(labelled).squeeze(1).tolist()
        if not sure:
            return []
        unsure = torch.nonzero(~labelled).squeeze(1).tolist()
        return [(sure[(int(self.step) + i) % len(sure)], u) for i, u in enumerate(unsure)]

    @staticmethod
    def point_probabilities(model: nn.Module, batch: dict, points: torch.Tensor,
                            flips: Sequence[Sequence[int]] = ((),)) -> torch.Tensor:
        """Class probabilities [P, K] of a segmentor for the batch's points where `points` is True (each inside
        a voxel of the batch's first cloud), averaged over the batch mirrored across each entry's axes of
        `flips` (() is the batch as it is)."""
        point_voxel = torch.where(points, batch["point_to_voxel"], torch.full_like(batch["point_to_voxel"], -1))
        total = 0
        for axes in flips:
            view = mirrored(batch, axes) if axes else batch
            x = model.voxels(view)
            feats = model.backbone(x).feats
            total = total + model.point_logits(view, feats, x.feats, point_voxel).float().softmax(1)
        return total / len(flips)

