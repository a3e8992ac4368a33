"""tools/infer.py's prepare step of a scene-flow model: consecutive frames of a sequence become pairs.

Frame t is read, cropped as HPLFlowNet crops KITTI (``pc3d.data.sequence_flow.scene_flow_crop``: depth,
field of view, ground cut) and sampled once (``num_points`` rows, seeded; None: every row of the crop). When
frame t arrives, the pair (t - 1, t) is the sample: ``points`` = frame t - 1's rows, ``points2`` = frame t's,
and the prediction is written for frame t - 1 (the sample's ``source_frame``; its ``extra["rows"]`` says
which row of that frame each predicted flow belongs to, the other rows are written as NaN). The first frame
of a sequence has no pair yet (None: the stream waits) and the last one never gets a flow (nothing follows).
A frame the stream skips (unreadable, or nothing left after the crop) breaks the chain: the stream calls
``frame_skipped()``, and the frame after the gap starts anew, as a sequence's first does (a pair across the gap
would be a flow over two scan intervals, written as the next frame's).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from pc3d.data.sequence_flow import scene_flow_crop
from pc3d.data.transforms import SamplePoints
from pc3d.errors import DataFormatError


class FlowPairs:
    """frame -> None (first frame of a sequence) or the sample of (previous frame, this frame).

    num_points: rows sampled per cloud after the crop (8,192 as the flow datasets; None: all rows, for a
    model that chunks its N x N steps). max_depth, fov, min_z: the crop (metres, degrees, metres; min_z None
    keeps the ground). seed: of the sampling (frame k draws from (seed, k)).
    """

    def __init__(self, num_points: int | None = 8192, max_depth: float = 35.0, fov: float = 90.0,
                 min_z: float | None = -1.4, seed: int = 0):
        self.num_points, self.seed = num_points, seed
        self.crop = dict(max_depth=max_depth, fov=fov, min_z=min_z)
        self.previous, self.count = None, 0

    def start_sequence(self, name: str | None = None) -> None:
        self.previous = None

    def frame_skipped(self) -> None:
        self.previous = None

    def rows(self, frame) -> np.ndarray:
        """int64: the rows of frame.points the model sees (cropped, then sampled as SamplePoints samples)."""
        rows = np.flatnonzero(scene_flow_crop(frame.points, **self.crop))
        if not len(rows):
            raise DataFormatError(frame.source, f"no point left after the scene-flow crop ({self.crop})")
        if self.num_points:
            rng = np.random.default_rng([self.seed, self.count])
            rows = rows[SamplePoints(self.num_points).indices(len(rows), rng)]
        return rows

    def __call__(self, frame) -> dict | None:
        rows = self.rows(frame)
        self.count += 1
        previous, self.previous = self.previous, (frame, rows)
        if previous is None:
            return None
        first, first_rows = previous
        return {"frame_id": first.frame_id, "points": np.ascontiguousarray(first.points[first_rows, :3]),
                "points2": np.ascontiguousarray(frame.points[rows, :3]), "seed": 0,
                "source_frame": dataclasses.replace(first, extra={**first.extra, "rows": first_rows})}
