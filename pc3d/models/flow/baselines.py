"""Scene-flow baselines without weights (task "flow"), the reference rows of every flow table.

ZeroFlow             flow = 0: the EPE3D it scores is the mean motion of the scored points.
NearestNeighbourFlow flow = the nearest point of the second cloud minus the point (exact kNN, k = 1): what a
                     matching without learned features gives; it cannot beat the clouds' sampling density.
IcpFlow              flow = the rigid motion point-to-plane ICP finds from the identity (pc3d.geometry.registration),
                     for every point: the sensor's motion when the scene is static and ICP reaches it, which
                     from the identity it does only for small motions (its pairs are nearest points).

Both read ``points`` / ``points2`` of a batch (pc3d.data.batch) and return the flow contract per sample, with
the first cloud's xyz (``points``) and the ground truth (``flow_gt``, ``flow_mask``, when the batch has it)
echoed. They have no training mode.
"""
from __future__ import annotations

import numpy as np
from torch import nn

from pc3d.geometry import knn
from pc3d.geometry.registration import point_to_plane_icp


def _split(batch: dict, key: str, offsets: str) -> list[np.ndarray]:
    values, cut = batch[key].cpu().numpy(), batch[offsets].tolist()
    return [values[cut[b]:cut[b + 1]] for b in range(batch["batch_size"])]


class _FlowBaseline(nn.Module):
    task = "flow"

    def flows(self, p1: np.ndarray, p2: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def forward(self, batch: dict) -> list[dict]:
        if self.training:
            raise RuntimeError(f"{type(self).__name__} has no weights to train; evaluate it")
        clouds = zip(_split(batch, "points", "point_offsets"), _split(batch, "points2", "point_offsets2"), strict=True)
        gts = _split(batch, "flow", "point_offsets") if "flow" in batch else None
        masks = _split(batch, "flow_mask", "point_offsets") if "flow_mask" in batch else None
        out = []
        for b, (p1, p2) in enumerate(clouds):
            pred = {"frame_id": batch["frame_id"][b], "flow": self.flows(p1[:, :3], p2[:, :3]).astype(np.float32),
                    "points": p1[:, :3]}
            if gts is not None:
                pred["flow_gt"] = gts[b]
            if masks is not None:
                pred["flow_mask"] = masks[b]
            out.append(pred)
        return out


class ZeroFlow(_FlowBaseline):
    """flow = 0 for every point of the first cloud."""

    def flows(self, p1: np.ndarray, p2: np.ndarray) -> np.ndarray:
        return np.zeros_like(p1)


class NearestNeighbourFlow(_FlowBaseline):
    """flow = the nearest point of the second cloud minus the point."""

    def flows(self, p1: np.ndarray, p2: np.ndarray) -> np.ndarray:
        _, idx = knn(p1, p2, 1)
        return p2[idx[:, 0]] - p1


class IcpFlow(_FlowBaseline):
    """flow = R p + t - p with (R, t) from point-to-plane ICP of the first cloud onto the second, from the identity."""

    def flows(self, p1: np.ndarray, p2: np.ndarray) -> np.ndarray:
        xyz = p1.astype(np.float64)
        rotation, translation, _ = point_to_plane_icp(xyz, p2)
        return xyz @ rotation.T + translation - xyz


BASELINES = {"zero": ZeroFlow, "nearest": NearestNeighbourFlow, "icp": IcpFlow}
