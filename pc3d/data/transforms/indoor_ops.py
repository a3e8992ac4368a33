"""Indoor detection augmentation: the axis-aligned boxes recomputed from the augmented points.

Indoor boxes (ScanNet) are the min / max of each instance's points (pc3d.data.indoor_boxes). A rotation
turns an axis-aligned box into one that is not, and point dropping shrinks what an instance spans; rather
than approximate the new box from the old one, `BoxesFromInstances` (last in the augmentation list) takes it
again from the points, exactly as the benchmark's preparation does on the raw scene.
"""
from __future__ import annotations

import numpy as np

from ..indoor_boxes import instance_boxes


class BoxesFromInstances:
    """gt_boxes / gt_labels of the sample's instances as they are now (first_class: see instance_boxes).
    Needs point_labels and instance_ids (ScanNetDataset(boxes=True) has both)."""

    def __init__(self, first_class: int = 2):
        self.first_class = first_class

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        sample["gt_boxes"], sample["gt_labels"] = instance_boxes(
            sample["points"], sample["point_labels"], sample["instance_ids"], self.first_class, sample.get("frame_id"))
        return sample
