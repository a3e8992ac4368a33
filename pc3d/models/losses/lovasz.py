"""Lovasz-softmax (Berman, Rannen Triki, Blaschko, CVPR 2018): a convex surrogate of 1 - IoU per class.

For class c, with errors e_i = |[y_i = c] - p_i(c)| sorted in decreasing order, the loss is
<e_sorted, grad of the Jaccard loss along that order>; the result is the mean over classes.
All classes are handled at once on [P, C] tensors (one sort per column, no Python loop over classes).
"""
from __future__ import annotations

import torch


def lovasz_grad(fg_sorted: torch.Tensor) -> torch.Tensor:
    """[P, C] float 0/1 ground truth sorted by decreasing error -> the Lovasz extension's gradient [P, C]."""
    gts = fg_sorted.sum(0, keepdim=True)
    intersection = gts - fg_sorted.cumsum(0)
    union = gts + (1.0 - fg_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]], 0)


def lovasz_softmax(probs: torch.Tensor, labels: torch.Tensor, ignore_index: int | None = None,
                   classes: str = "present") -> torch.Tensor:
    """Lovasz-softmax loss of probabilities [P, C] (softmax output) and labels int64 [P].

    ignore_index: label of points left out. classes: "present" averages over the classes that occur
    in `labels` (the usual choice for segmentation), "all" over every class. 0 when no point is left.
    """
    if ignore_index is not None:
        keep = labels != ignore_index
        probs, labels = probs[keep], labels[keep]
    if probs.numel() == 0:
        return probs.sum() * 0.0
    fg = torch.nn.functional.one_hot(labels, probs.shape[1]).to(probs.dtype)
    errors = (fg - probs).abs()
    errors_sorted, order = errors.sort(0, descending=True)
    losses = (errors_sorted * lovasz_grad(fg.gather(0, order))).sum(0)  # [C]
    if classes == "present":
        present = fg.sum(0) > 0
        return losses[present].mean()
    if classes == "all":
        return losses.mean()
    raise ValueError(f"classes must be 'present' or 'all', not {classes!r}")
