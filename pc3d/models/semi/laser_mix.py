"""LaserMix (Kong et al., CVPR 2023) on voxels: two scans of a batch swap areas of laser inclination.

A LiDAR scene is laid out by inclination: road in the low beams, cars and people in the middle ones, buildings and
vegetation in the high ones, whatever the scan. Cutting two scans into the same bands of inclination and
interleaving them gives scenes as plausible as the originals, so a labelled scan and an unlabelled one can be mixed
and the mix supervised by the labelled scan's labels and the teacher's pseudo labels of the other.

Conventions
- a voxel's inclination: atan2(z, sqrt(x^2 + y^2)) of its feature's first three columns (the mean of its points,
  in the sensor frame: global rotations, flips and scalings about the sensor keep it);
- the areas of a pair: `areas` equal bands between the least and the largest inclination of the two scans' voxels;
  area i holds band i (the top edge in the last);
- mixes of a pair (a, b): a's even areas with b's odd ones, and b's even areas with a's odd ones (every voxel of the
  pair lands in exactly one mix); a site that both scans fill, each voxel on its own side of an area's edge (the
  inclination is the voxel's points', not the site's), keeps the voxel of the scan earlier in the batch;
- the mixes of pairs (a_0, b_0), (a_1, b_1), ... are batch entries 0, 1 (pair 0), 2, 3 (pair 1), ...
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from pc3d.sparse import SparseTensor


def inclination(xyz: torch.Tensor) -> torch.Tensor:
    """[N] angle (radians) of each point above the sensor's horizontal plane."""
    return torch.atan2(xyz[:, 2], torch.linalg.vector_norm(xyz[:, :2], dim=1))


def inclination_areas(angle: torch.Tensor, areas: int) -> torch.Tensor:
    """int64 [N]: the band (0 .. areas - 1) of each angle among `areas` equal bands between their least and largest."""
    low, high = angle.min(), angle.max()
    band = ((angle - low) / (high - low).clamp(min=1e-12) * areas).long()
    return band.clamp(max=areas - 1)


def laser_mix(x: SparseTensor, labels: torch.Tensor, pairs: Sequence[tuple[int, int]], areas: Sequence[int]
              ) -> tuple[SparseTensor, torch.Tensor]:
    """(the mixes, their voxel labels) of the pairs (a, b) of batch entries of `x`, pair i cut into areas[i]
    bands; `labels` [N] are x's voxel labels (what each voxel teaches in any mix)."""
    batch, angle = x.coords[:, 0].long(), inclination(x.feats[:, :3].float())
    rows, entries = [], []
    for i, ((a, b), count) in enumerate(zip(pairs, areas, strict=True)):
        in_pair = (batch == a) | (batch == b)
        area = torch.full_like(batch, -1)
        area[in_pair] = inclination_areas(angle[in_pair], count)
        even = area % 2 == 0
        for entry, keep in ((2 * i, ((batch == a) & even) | ((batch == b) & ~even)),
                            (2 * i + 1, ((batch == b) & even) | ((batch == a) & ~even))):
            index = torch.nonzero(keep & in_pair).squeeze(1)
            rows.append(index)
            entries.append(torch.full_like(index, entry))
    rows, entries = torch.cat(rows), torch.cat(entries)
    coords = torch.cat([entries[:, None].to(x.coords.dtype), x.coords[rows, 1:]], 1)
    _, inverse = torch.unique(coords, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1 if len(inverse) else 0,), len(inverse), dtype=torch.long)
    first = first.scatter_reduce(0, inverse, torch.arange(len(inverse)), "amin")
    if len(first) < len(rows):  # a site both scans fill, each voxel on its side of an area's edge: one stays
        keep = first.sort().values
        rows, coords = rows[keep], coords[keep]
    mixed = SparseTensor(x.feats[rows], coords, x.spatial_shape, 2 * len(pairs))
    return mixed, labels[rows]


def concat_batches(first: SparseTensor, second: SparseTensor) -> SparseTensor:
    """One SparseTensor of both batches' entries, `second`'s after `first`'s (rows in that order)."""
    coords = second.coords.clone()
    coords[:, 0] += first.batch_size
    return SparseTensor(torch.cat([first.feats, second.feats]), torch.cat([first.coords, coords]),
                        first.spatial_shape, first.batch_size + second.batch_size)
