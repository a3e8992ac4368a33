"""Box coders: regression targets of anchor heads (SECOND's residual coder) and CenterPoint heads.

Both coders work on numpy arrays and torch tensors alike (torch keeps autograd), over any leading
dimensions: boxes [..., 7 (+2)]. decode(encode(boxes)) returns the boxes (headings up to 2 pi).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pc3d.errors import ConfigError, DataFormatError

from ._arrays import is_torch


class _Ops:
    """The handful of array functions the coders need, for numpy or torch."""

    def __init__(self, x: Any):
        if is_torch(x):
            import torch

            self.cat = lambda xs: torch.cat(xs, -1)
            self.atan2 = torch.atan2
            self.clamp_min = torch.clamp_min
            self.floor = torch.floor
            self.xp = torch
        else:
            self.cat = lambda xs: np.concatenate(xs, -1)
            self.atan2 = np.arctan2
            self.clamp_min = np.maximum
            self.floor = np.floor
            self.xp = np


def _check_last(x: Any, cols: int, name: str) -> None:
    if x.ndim < 1 or x.shape[-1] < cols:
        raise DataFormatError(None, f"{name} must be [..., {cols}+], got shape {tuple(x.shape)}")


class ResidualCoder:
    """SECOND / OpenPCDet residual coder of boxes relative to anchors.

    Targets: (x - xa) / d, (y - ya) / d, (z - za) / dza with d = sqrt(dxa^2 + dya^2) the anchor's
    BEV diagonal; log(dx / dxa), log(dy / dya), log(dz / dza); heading - heading_a, or with
    encode_angle_by_sincos cos(h) - cos(ha), sin(h) - sin(ha); then any extra columns (vx, vy) as
    plain differences (anchors without them count as 0). code_size = 7 (+1 with sin/cos) + extras.
    Decoded headings are not wrapped (wrap_angle before export).
    """

    def __init__(self, encode_angle_by_sincos: bool = False, code_size: int = 7):
        self.encode_angle_by_sincos = bool(encode_angle_by_sincos)
        self.box_size = int(code_size)
        self.code_size = self.box_size + int(self.encode_angle_by_sincos)

    def encode(self, boxes: Any, anchors: Any) -> Any:
        """Targets [..., code_size] of boxes [..., 7+] against anchors [..., 7+] (same leading shape)."""
        _check_last(boxes, 7, "boxes")
        _check_last(anchors, 7, "anchors")
        ops = _Ops(boxes)
        xp = ops.xp
        a_size = ops.clamp_min(anchors[..., 3:6], 1e-5)
        g_size = ops.clamp_min(boxes[..., 3:6], 1e-5)
        diagonal = xp.sqrt(a_size[..., 0:1] ** 2 + a_size[..., 1:2] ** 2)
        xy = (boxes[..., 0:2] - anchors[..., 0:2]) / diagonal
        z = (boxes[..., 2:3] - anchors[..., 2:3]) / a_size[..., 2:3]
        size = xp.log(g_size / a_size)
        h, ha = boxes[..., 6:7], anchors[..., 6:7]
        if self.encode_angle_by_sincos:
            heading = [xp.cos(h) - xp.cos(ha), xp.sin(h) - xp.sin(ha)]
        else:
            heading = [h - ha]
        return ops.cat([xy, z, size, *heading, self._extras(boxes, anchors, -1)])

    def decode(self, deltas: Any, anchors: Any) -> Any:
        """Boxes [..., 7 + extras] from targets [..., code_size] and anchors [..., 7+]."""
        _check_last(deltas, self.code_size, "deltas")
        _check_last(anchors, 7, "anchors")
        ops = _Ops(deltas)
        xp = ops.xp
        a_size = ops.clamp_min(anchors[..., 3:6], 1e-5)
        diagonal = xp.sqrt(a_size[..., 0:1] ** 2 + a_size[..., 1:2] ** 2)
        xy = deltas[..., 0:2] * diagonal + anchors[..., 0:2]
        z = deltas[..., 2:3] * a_size[..., 2:3] + anchors[..., 2:3]
        size = xp.exp(deltas[..., 3:6]) * a_size
        ha = anchors[..., 6:7]
        if self.encode_angle_by_sincos:
            cos = deltas[..., 6:7] + xp.cos(ha)
            sin = deltas[..., 7:8] + xp.sin(ha)
            heading = ops.atan2(sin, cos)
            rest = deltas[..., 8:]
        else:
            heading = deltas[..., 6:7] + ha
            rest = deltas[..., 7:]
        return ops.cat([xy, z, size, heading, self._extras(rest, anchors, +1)])

    @staticmethod
    def _extras(values: Any, anchors: Any, sign: int) -> Any:
        """Extra columns of values (boxes: from index 7; deltas: all), minus (or plus) the anchor's."""
        extra = values[..., 7:] if sign < 0 else values
        n = extra.shape[-1]
        if n and anchors.shape[-1] >= 7 + n:
            return extra + sign * anchors[..., 7:7 + n]
        return extra


class CenterPointCoder:
    """CenterPoint regression targets at heat-map cells.

    Per box at feature-map cell (ix, iy): sub-cell offset of the centre, x and y in cells
    ((x - x_min) / (voxel_x * out_stride) - ix); z; log dx, log dy, log dz; sin, cos of the
    heading; then vx, vy when the boxes have them: targets [..., 8 (+2)].
    """

    def __init__(self, voxel_size: Sequence[float], point_range: Sequence[float], out_stride: int):
        if len(voxel_size) < 2 or len(point_range) < 2 or int(out_stride) < 1:
            raise ConfigError(f"CenterPointCoder needs voxel_size (x, y, ...), point_range (x_min, y_min, ...) and "
                              f"a positive out_stride; got {voxel_size}, {point_range}, {out_stride}")
        self.cell = (float(voxel_size[0]) * int(out_stride), float(voxel_size[1]) * int(out_stride))
        self.origin = (float(point_range[0]), float(point_range[1]))
        self.out_stride = int(out_stride)

    def cell_index(self, boxes: Any) -> Any:
        """The feature-map cell (ix, iy) holding each box centre [..., 2], int64 (floor)."""
        ops = _Ops(boxes)
        fx = ops.floor((boxes[..., 0:1] - self.origin[0]) / self.cell[0])
        fy = ops.floor((boxes[..., 1:2] - self.origin[1]) / self.cell[1])
        out = ops.cat([fx, fy])
        return out.long() if ops.xp is not np else out.astype(np.int64)

    def encode(self, boxes: Any, cell_xy_index: Any = None) -> Any:
        """Targets [..., 8 (+2)] of boxes [..., 7 (+2)] at cells cell_xy_index [..., 2] (x, y).

        cell_xy_index defaults to cell_index(boxes), the cell that holds each centre.
        """
        _check_last(boxes, 7, "boxes")
        ops = _Ops(boxes)
        xp = ops.xp
        if cell_xy_index is None:
            cell_xy_index = self.cell_index(boxes)
        cell = cell_xy_index if xp is not np else np.asarray(cell_xy_index).astype(boxes.dtype)
        ix = cell[..., 0:1]
        iy = cell[..., 1:2]
        off_x = (boxes[..., 0:1] - self.origin[0]) / self.cell[0] - ix
        off_y = (boxes[..., 1:2] - self.origin[1]) / self.cell[1] - iy
        log_dims = xp.log(ops.clamp_min(boxes[..., 3:6], 1e-5))
        h = boxes[..., 6:7]
        return ops.cat([off_x, off_y, boxes[..., 2:3], log_dims, xp.sin(h), xp.cos(h), boxes[..., 7:9]])

    def decode(self, offsets: Any, z: Any, log_dims: Any, sin: Any, cos: Any, vel: Any,
               cell_xy_index: Any) -> Any:
        """Boxes [..., 7 (+2)] from head outputs at cells cell_xy_index [..., 2].

        offsets [..., 2]; z [..., 1]; log_dims [..., 3]; sin, cos [..., 1]; vel [..., 2] or None.
        """
        ops = _Ops(offsets)
        xp = ops.xp
        cell = cell_xy_index if xp is not np else np.asarray(cell_xy_index).astype(offsets.dtype)
        x = (cell[..., 0:1] + offsets[..., 0:1]) * self.cell[0] + self.origin[0]
        y = (cell[..., 1:2] + offsets[..., 1:2]) * self.cell[1] + self.origin[1]
        parts = [x, y, z, xp.exp(log_dims), ops.atan2(sin, cos)]
        if vel is not None:
            parts.append(vel)
        return ops.cat(parts)
