"""Lovasz-softmax (Berman, Rannen Triki, Blaschko, CVPR 2018): a convex surrogate of 1 - IoU per class.

For class c, with errors e_i = |[y_i = c] - p_i(c)| sorted in decreasing order, the loss is
<e_sorted, grad of the Jaccard loss along that order>; the result is the mean over classes.
All classes are handled at once as rows of [C, P] tensors (one sort per row, contiguous, no Python loop
over classes); with classes="present" the absent classes are dropped before the sort, which is most of
the loss's time. On CPU the float32 rows are sorted by pc3d's radix sort (`pc3d_ops.sort`; torch's sort of
a [14, 81k] error matrix took 40-48 ms of a 600-750 ms segmentation step on 2 cores, the radix sort ~11 ms),
elsewhere by torch's. Equal errors may come out in another order than torch's sort gives: the loss is the
same (a run of equal errors contributes their value times the Jaccard change across the whole run).
Points and classes are selected by index, not by boolean mask: the backward of a masked read is a masked
write (`index_put_`), 4x slower on CPU than the scatter-add behind `index_select`.
"""
from __future__ import annotations

import numpy as np
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
        keep = (labels != ignore_index).nonzero().squeeze(1)
        probs, labels = probs.index_select(0, keep), labels.index_select(0, keep)
    if probs.numel() == 0:
        return probs.sum() * 0.0
    fg = torch.nn.functional.one_hot(labels, probs.shape[1]).to(probs.dtype).t()  # [C, P]
    probs = probs.t()
    if classes == "present":
        present = (fg.sum(1) > 0).nonzero().squeeze(1)
        fg, probs = fg.index_select(0, present), probs.index_select(0, present)
    fg = fg.contiguous()
    errors = (fg - probs).abs()
    order = descending_order(errors.detach())
    return (errors.gather(1, order) * lovasz_grad(fg.gather(1, order))).sum(1).mean()


def descending_order(errors: torch.Tensor) -> torch.Tensor:
    """int64 [C, P]: each row's indices by decreasing value, for non-negative errors [C, P]."""
    if errors.device.type != "cpu" or errors.dtype != torch.float32:
        return errors.sort(1, descending=True).indices
    from pc3d_ops.sort import argsort_rows_descending

    from pc3d.sparse.kernel_map import sync_threads

    keys = errors.contiguous()
    order = torch.empty(keys.shape, dtype=torch.int64)
    sync_threads()
    argsort_rows_descending(keys.view(torch.int32).numpy().view(np.uint32), order.numpy())
    return order
