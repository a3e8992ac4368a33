"""Pseudo labels of a mean teacher for unlabelled LiDAR frames (Less is More): a reflectivity prior on the
teacher's class probabilities, then thresholds per class and range band, hard labels where the teacher is
sure and soft ones where it is middling.

Conventions
- range band of a point: the index of its horizontal distance sqrt(x^2 + y^2) in ``edges`` (metres,
  ascending, the last band open-ended): band b holds edges[b] <= d < edges[b + 1];
- range-normalised remission: remission / (mean remission of that band over the labelled points), so a
  material reads about the same near and far (the return fades with range);
- reflectivity prior: p(rho | c), a histogram per class of the normalised remission over ``remission_bins``
  bins on [0, max_ratio) (the last bin takes everything above), with add-one smoothing, fit on labelled
  points only; the adjusted probability is p'(c) ~ p(c) * p(rho | c)^beta, renormalised;
- thresholds: for each class c and band b, the (1 - keep) quantile of the adjusted confidence max_c p'(c)
  of the points whose adjusted prediction is c in band b, so every class and every distance keeps the same
  share of its points and far or rare classes are not starved by one global cut; a cell without points gets
  +inf (no pseudo label). ``min_confidence`` raises every cell's threshold to at least that value: a cell
  the teacher is unsure about as a whole (on simulated SemanticKITTI, parking predicted on road) otherwise
  hands hard labels to its best half however wrong (the README has what it did to a trained mean teacher);
- targets: a point with confidence >= its cell's threshold gets the hard label argmax p'; a point within
  ``soft_margin`` below it gets the soft target p' (weighted by its confidence); the rest are ignored.
Nothing here reads a ground-truth label of an unlabelled frame: the prior is fit on labelled frames.
Several processes (DDP, torch.distributed initialised): the prior is fit on every rank's labelled points. Each
update's sums are summed over the ranks (all_reduce) before they enter the buffers, so every rank holds the prior one
process would fit on the union of their points (up to float rounding) and the same prior on every rank: DDP's
broadcast_buffers, which copies rank 0's buffers over every rank's at each forward, then copies equal values instead
of throwing the other ranks' points away. An update is then a collective: every rank makes it (the mean teacher, once
per training forward).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import nn

from pc3d.engine.ema import averaged_keys

IGNORE = -1


def _world_size() -> int:
    """The number of processes whose statistics are summed (1 unless torch.distributed is initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def range_band(points: torch.Tensor, edges: Sequence[float]) -> torch.Tensor:
    """int64 [N]: band of each point's horizontal distance (points [N, >= 2]); distances below edges[0]
    go to band 0."""
    distance = torch.linalg.vector_norm(points[:, :2].float(), dim=1)
    bounds = torch.as_tensor(list(edges)[1:], dtype=distance.dtype, device=distance.device)
    return torch.bucketize(distance, bounds, right=True)


class ReflectivityPrior(nn.Module):
    """Per-band remission normaliser and per-class histograms of normalised remission (see module doc).

    num_classes, ignore_index: the label space (ignored labels never count); edges: range bands;
    remission_bins, max_ratio: the histogram of normalised remission. The sums are float64 buffers, so
    they travel in the model's state dict: a resumed run goes on with the prior it had. They are statistics of
    the data, not of the weights: a weight average (pc3d.engine.ema) copies them. Under torch.distributed every
    update adds all ranks' sums (module doc), the same on every rank."""

    def __init__(self, num_classes: int, edges: Sequence[float] = (0, 10, 20, 30, 40, 50), ignore_index: int = 0,
                 remission_bins: int = 16, max_ratio: float = 4.0):
        super().__init__()
        self.num_classes, self.edges, self.ignore_index = num_classes, list(edges), ignore_index
        self.bins, self.max_ratio = remission_bins, max_ratio
        self.register_buffer("band_sum", torch.zeros(len(self.edges), dtype=torch.float64))
        self.register_buffer("band_count", torch.zeros(len(self.edges), dtype=torch.float64))
        self.register_buffer("histogram", torch.zeros(num_classes, remission_bins, dtype=torch.float64))

    def normalised(self, points: torch.Tensor, remission: torch.Tensor) -> torch.Tensor:
        """Remission / the band's mean (1 where a band has no labelled points yet)."""
        device = self.band_sum.device
        band = range_band(points, self.edges).to(device)
        mean = torch.where(self.band_count > 0, self.band_sum / self.band_count.clamp(min=1), 1.0)
        return remission.double().to(device) / mean[band].clamp(min=1e-6)

    def _bin(self, ratio: torch.Tensor) -> torch.Tensor:
        return (ratio / self.max_ratio * self.bins).long().clamp(0, self.bins - 1)

    def update(self, points: torch.Tensor, remission: torch.Tensor, labels: torch.Tensor) -> None:
        """Add labelled points [N, >= 2] with remission [N] and labels [N] (ignore_index skipped): first the
        band means, then the class histograms of the remission normalised by them. Under torch.distributed, a
        collective: the points of every rank's call are added, on every rank (N may be 0 on some)."""
        device = self.band_sum.device
        keep = labels != self.ignore_index
        points, labels = points[keep].to(device), labels[keep].to(device)
        remission = remission[keep].double().to(device)
        band = range_band(points, self.edges)
        ranks = _world_size()
        if ranks > 1:  # this call's band sums over every rank, then into the buffers
            sums = torch.zeros(2, len(self.edges), dtype=torch.float64, device=device)
            sums[0].index_add_(0, band, remission)
            sums[1].index_add_(0, band, torch.ones_like(remission))
            dist.all_reduce(sums)
            self.band_sum += sums[0]
            self.band_count += sums[1]
        else:  # one process: each point added straight into the buffers
            self.band_sum.index_add_(0, band, remission)
            self.band_count.index_add_(0, band, torch.ones_like(remission))
        cell = labels * self.bins + self._bin(self.normalised(points, remission))  # by every rank's band means
        counts = torch.bincount(cell, minlength=self.num_classes * self.bins).view(self.num_classes, self.bins).double()
        if ranks > 1:
            dist.all_reduce(counts)
        self.histogram += counts

    def likelihood(self, points: torch.Tensor, remission: torch.Tensor) -> torch.Tensor:
        """float64 [N, num_classes]: p(rho | c) of each point's normalised remission (add-one smoothed)."""
        table = (self.histogram + 1) / (self.histogram.sum(1, keepdim=True) + self.bins)
        return table[:, self._bin(self.normalised(points, remission))].T


def adjust(prob: torch.Tensor, likelihood: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """p'(c) ~ prob(c) * likelihood(c)^beta over classes, renormalised; [N, K] in prob's dtype."""
    weighted = prob.double() * likelihood.to(prob.device).pow(beta)
    return (weighted / weighted.sum(1, keepdim=True).clamp(min=1e-12)).to(prob.dtype)


def class_range_thresholds(confidence: torch.Tensor, pred: torch.Tensor, band: torch.Tensor, num_classes: int,
                           num_bands: int, keep: float, min_confidence: float = 0.0) -> torch.Tensor:
    """float [num_classes, num_bands]: the (1 - keep) quantile of confidence per (predicted class, band)
    cell, at least min_confidence; +inf where a cell has no points."""
    out = torch.full((num_classes, num_bands), float("inf"), dtype=confidence.dtype)
    cell = (pred * num_bands + band).cpu()
    conf = confidence.cpu()
    for c in torch.unique(cell).tolist():
        values = conf[cell == c]
        out.view(-1)[c] = torch.quantile(values.float(), 1.0 - keep).to(conf.dtype)
    return out.clamp(min=min_confidence)


def pseudo_targets(prob: torch.Tensor, band: torch.Tensor, thresholds: torch.Tensor, soft_margin: float = 0.1
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(hard int64 [N]: the label where confidence >= its cell's threshold, else IGNORE;
    soft float [N]: the confidence where it lies within soft_margin below the threshold, else 0)."""
    confidence, pred = prob.max(dim=1)
    tau = thresholds.to(prob.device)[pred, band.to(prob.device)]
    hard = torch.where(confidence >= tau, pred, torch.full_like(pred, IGNORE))
    soft = torch.where((confidence < tau) & (confidence >= tau - soft_margin), confidence,
                       torch.zeros_like(confidence))
    return hard, soft


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, step: int, max_alpha: float = 0.99) -> float:
    """teacher <- alpha * teacher + (1 - alpha) * student over parameters and norm running statistics (the entries
    `pc3d.engine.ema.averaged_keys` names), alpha = min(1 - 1 / (step + 1), max_alpha): the teacher follows
    closely at first. Every other entry (BatchNorm's batch counter, buffers that count or sum data) is copied.
    Returns alpha."""
    alpha = min(1.0 - 1.0 / (step + 1), max_alpha)
    averaged = averaged_keys(student)
    teacher_state = teacher.state_dict()
    for key, s in student.state_dict().items():
        t = teacher_state[key]
        if key in averaged and t.dtype.is_floating_point:
            t.mul_(alpha).add_(s.detach(), alpha=1.0 - alpha)
        else:
            t.copy_(s)
    return alpha
