"""Window partitions of sparse voxels for window attention: DSVT's dynamic sets and FlatFormer's
equal-size groups, both as fixed-size slot tables that one batched attention call consumes.

Conventions
- coords: int [N, 1 + D] (batch, then grid axes in `spatial_shape` order: z, y, x for LiDAR grids).
- window_shape, shift: D ints in the same axis order. A voxel at c lies in window (c + shift) // W at
  position (c + shift) % W, so a shift of W / 2 moves every window boundary by half a window; a
  shifted grid has one more window along each shifted axis.
- axes: the sort order of windows and of positions inside a window, slowest axis first (a
  permutation of 0..D-1). `serpentine`: each axis runs backwards wherever the indices of the slower
  axes sum to an odd number (a boustrophedon path: consecutive cells stay neighbours).
- A `Slots` table holds T rows of K slots: `index[t, k]` is the input row in that slot; a slot
  that repeats its left neighbour's row is masked for keys (`key_mask` False); every input row
  takes its output from its first slot, `first[i]` (a flat index t * K + k).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class Slots:
    """A slot table: index int64 [T, K], key_mask bool [T, K] (True: attends as a key), first int64 [N]."""

    index: torch.Tensor
    key_mask: torch.Tensor
    first: torch.Tensor

    @property
    def attn_mask(self) -> torch.Tensor | None:
        """The boolean mask [T, 1, 1, K] for scaled_dot_product_attention, or None when no slot is masked."""
        if bool(self.key_mask.all()):
            return None
        return self.key_mask[:, None, None, :]


def num_windows(spatial_shape: Sequence[int], window_shape: Sequence[int], shift: Sequence[int]) -> list[int]:
    """Windows along each axis of the grid once shifted: (size - 1 + shift) // window + 1."""
    return [(s - 1 + h) // w + 1 for s, w, h in zip(spatial_shape, window_shape, shift, strict=True)]


def window_position(coords: torch.Tensor, window_shape: Sequence[int], shift: Sequence[int]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(window int64 [N, D], position in the window int64 [N, D]) of every voxel."""
    c = coords[:, 1:].long() + torch.as_tensor(shift, dtype=torch.long, device=coords.device)
    w = torch.as_tensor(window_shape, dtype=torch.long, device=coords.device)
    return c // w, c % w


def relative_to_window_centre(coords: torch.Tensor, window_shape: Sequence[int], shift: Sequence[int]
                              ) -> torch.Tensor:
    """float32 [N, D]: each voxel's centre minus its window's centre, in cells."""
    _, local = window_position(coords, window_shape, shift)
    w = torch.as_tensor(window_shape, dtype=torch.float32, device=coords.device)
    return local.float() + 0.5 - w / 2


def raster_key(index: torch.Tensor, sizes: Sequence[int], axes: Sequence[int], serpentine: bool = False
               ) -> torch.Tensor:
    """int64 [N]: the rank of each cell index [N, D] in a grid of `sizes`, visiting `axes` slowest first."""
    key = torch.zeros(index.shape[0], dtype=torch.long, device=index.device)
    parity = torch.zeros_like(key)
    for a in axes:
        v = index[:, a]
        if serpentine:
            v = torch.where(parity % 2 == 1, sizes[a] - 1 - v, v)
            parity = parity + index[:, a]
        key = key * sizes[a] + v
    return key


def sort_by_window(coords: torch.Tensor, spatial_shape: Sequence[int], window_shape: Sequence[int],
                   shift: Sequence[int], axes: Sequence[int], serpentine: bool = False,
                   window_axes: Sequence[int] | None = None, continuous: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(order int64 [N], window int64 [N]): input rows sorted by (batch, window, position in window), and
    the window id (unique over the batch) of each sorted row. Windows are visited along `window_axes` (default:
    `axes`, the order inside a window); `continuous` reverses the order inside every window whose index along
    the slowest window axis is odd (FlatFormer's released path, which runs back through each other row of
    windows)."""
    window_axes = axes if window_axes is None else window_axes
    windows = num_windows(spatial_shape, window_shape, shift)
    win, local = window_position(coords, window_shape, shift)
    win_key = coords[:, 0].long() * _prod(windows) + raster_key(win, windows, window_axes, serpentine)
    pos_key = raster_key(local, window_shape, axes, serpentine)
    if continuous:
        pos_key = torch.where(win[:, window_axes[0]] % 2 == 1, _prod(window_shape) - 1 - pos_key, pos_key)
    order = torch.argsort(win_key * _prod(window_shape) + pos_key)
    return order, win_key[order]


def dynamic_sets(coords: torch.Tensor, spatial_shape: Sequence[int], window_shape: Sequence[int],
                 shift: Sequence[int], set_size: int, axes: Sequence[int]) -> Slots:
    """DSVT's dynamic sets. A window with n voxels (sorted along `axes`) gets s = ceil(n / S) sets of
    S = set_size slots; slot k of set j holds the voxel of rank floor((j * S + k) * n / (s * S)), so a
    short window repeats its voxels evenly."""
    order, win = sort_by_window(coords, spatial_shape, window_shape, shift, axes)
    if len(order) == 0:
        return _empty(set_size, coords.device)
    _, n = torch.unique_consecutive(win, return_counts=True)
    s = (n + set_size - 1) // set_size
    start, set_start = _starts(n), _starts(s)
    set_window = torch.repeat_interleave(torch.arange(len(n), device=n.device), s)
    j = torch.arange(len(set_window), device=n.device) - set_start[set_window]
    flat = j[:, None] * set_size + torch.arange(set_size, device=n.device)  # slot number within the window
    n_w, s_w = n[set_window, None], s[set_window, None]
    rank = flat * n_w // (s_w * set_size)
    # the first slot of rank r is ceil(r * s * S / n)
    window_of = torch.repeat_interleave(torch.arange(len(n), device=n.device), n)
    r = torch.arange(len(order), device=n.device) - start[window_of]
    first_sorted = set_start[window_of] * set_size + (r * s[window_of] * set_size + n[window_of] - 1) // n[window_of]
    return _slots(order, start[set_window, None] + rank, first_sorted)


def flat_groups(coords: torch.Tensor, spatial_shape: Sequence[int], window_shape: Sequence[int],
                shift: Sequence[int], group_size: int, axes: Sequence[int], batch_size: int,
                released_path: bool = False) -> Slots:
    """FlatFormer's groups: each sample's voxels in serpentine window order, cut into ceil(m / G) groups
    of G = group_size slots. The last group holds the sample's final G tokens (its leading slots repeat
    tokens of the group before, whose outputs come from there); a sample with m < G tokens fills its one
    group with its final token repeated, masked for keys, so no group reaches into another sample.

    released_path: the released code's order (mit-han-lab/flatformer, FlattenedWindowMapping): windows visited
    with the two slowest of `axes` swapped (its "x" order walks the windows along x, and the cells inside each
    window with x slowest), the path inside a window reversed in every other row of windows."""
    window_axes = (axes[1], axes[0], *axes[2:]) if released_path else axes
    order, _ = sort_by_window(coords, spatial_shape, window_shape, shift, axes, serpentine=True,
                              window_axes=window_axes, continuous=released_path)
    if len(order) == 0:
        return _empty(group_size, coords.device)
    device = coords.device
    m = torch.bincount(coords[order, 0].long(), minlength=batch_size)
    g = (m + group_size - 1) // group_size
    start, group_start = _starts(m), _starts(g)
    group_sample = torch.repeat_interleave(torch.arange(batch_size, device=device), g)
    j = torch.arange(len(group_sample), device=device) - group_start[group_sample]
    k = torch.arange(group_size, device=device)
    m_g, last = m[group_sample, None], (j == g[group_sample] - 1)[:, None]
    # each slot's rank among its sample's sorted tokens
    pos = torch.where(last, (m_g - group_size).clamp(min=0) + k, j[:, None] * group_size + k)
    pos = torch.minimum(pos, m_g - 1)
    sample_of = torch.repeat_interleave(torch.arange(batch_size, device=device), m)
    r = torch.arange(len(order), device=device) - start[sample_of]
    m_t, g_t = m[sample_of], g[sample_of]
    in_last = r >= (g_t - 1) * group_size  # tokens first seen in their sample's last group
    slot = torch.where(in_last, (g_t - 1) * group_size + r - (m_t - group_size).clamp(min=0), r)
    return _slots(order, start[group_sample, None] + pos, group_start[sample_of] * group_size + slot)


def _slots(order: torch.Tensor, sorted_index: torch.Tensor, first_sorted: torch.Tensor) -> Slots:
    """Slots from positions in the sorted order: sorted_index [T, K], first_sorted [N] (the first slot of
    each sorted row)."""
    key_mask = torch.ones_like(sorted_index, dtype=torch.bool)
    key_mask[:, 1:] = sorted_index[:, 1:] != sorted_index[:, :-1]
    first = torch.empty_like(first_sorted)
    first[order] = first_sorted
    return Slots(order[sorted_index], key_mask, first)


def _empty(size: int, device) -> Slots:
    index = torch.zeros((0, size), dtype=torch.long, device=device)
    return Slots(index, index.bool(), torch.zeros(0, dtype=torch.long, device=device))


def _starts(counts: torch.Tensor) -> torch.Tensor:
    return torch.cumsum(counts, 0) - counts


def _prod(values: Sequence[int]) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out
