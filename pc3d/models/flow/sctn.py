"""SCTN scene flow (sparse convolution + transformer + optimal transport; task "flow").

    each cloud (same weights): voxels (mean xyz) -> sparse U-Net (feature_net) -> linear (feature_head)
        -> L2-normalised voxel features -> points (inverse distance over the 32 nearest voxels, interpolate.py)
        -> point transformer (transformer): f + global attention(f + pos_mlp(xyz))
    transport: FLOT's Sinkhorn on the cosine cost -> ot_flow [N, 3]
    refine: set convs over the 32 nearest first-cloud neighbours -> flow = ot_flow + residual
    ego_motion (optional, eval mode only; not SCTN's): the flow's dominant rigid motion refined by point-to-plane
        ICP onto the second cloud; points that follow it take its flow (rigid.py, EgoMotion)

Train mode: {"loss", "loss_l1", "loss_fsc", "epe", "epe_ot"}: loss = l1 + fsc_weight * fsc once the model has
taken `fsc_start_step` train steps (the persistent buffer `step` counts train-mode forwards, so a resumed
checkpoint keeps the count); loss_fsc is 0 before. epe / epe_ot: this batch's EPE3D on valid points of the
refined flow / of the transport's flow alone (detached): when epe_ot stays near zero flow's error, the
features do not match and the refinement only regresses the typical flow of the training set.
Eval mode: per sample {"frame_id", "flow" float32 [N, 3], "points" (the first cloud's xyz, echoed)} plus
"flow_gt" / "flow_mask" (numpy) when the batch has them, for pc3d.eval.hooks.FlowEvaluator.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from pc3d.data.batch import sparse_input
from pc3d.models.flow.interpolate import knn_per_sample, offsets_of, voxels_to_points
from pc3d.models.flow.losses import end_point_error, flow_l1, fsc_loss
from pc3d.models.flow.optimal_transport import OptimalTransport, normalize
from pc3d.models.flow.point_transformer import PointTransformer
from pc3d.models.flow.refine import FlowRefine
from pc3d.models.flow.rigid import EgoMotion
from pc3d.sparse import SparseModule


class SCTN(nn.Module):
    """in_channels: voxel feature width (3: mean x, y, z). backbone: a partial completed as
    backbone(in_channels=in_channels) (a SparseUNet; its out_channels sizes the rest). voxel_input: what the
    U-Net reads, "xyz" (the voxel's mean point, SCTN's and FLOT's input) or "occupancy" (a 1 per voxel,
    FCGF's: features of the shape alone, the same wherever it is; in_channels must be 1). interp_k: voxels per
    point interpolation (32). pos_hidden: position-MLP hidden width (32). ot_iters, ot_radius, ot_chunk,
    ot_keep_kernel: Sinkhorn iterations, support radius (m), rows of K (and attention queries) per block, K
    kept or rebuilt per product (optimal_transport.py); ot_epsilon_init: the entropy's starting value (FLOT:
    1.03). refine_widths, refine_k: set-conv widths and neighbours (32). ego_motion: None (SCTN's output) or the
    keyword arguments of rigid.EgoMotion (inlier_threshold, surface_threshold, icp_max_distance, icp_iters),
    applied to each predicted pair in eval mode, for clouds from one moving sensor. fsc_weight,
    fsc_start_step, fsc_k, fsc_temperature: the FSC term (fsc_k <= refine_k - 1 neighbours, the point itself
    excluded)."""

    task = "flow"

    def __init__(self, backbone: Callable[..., SparseModule], in_channels: int = 3, voxel_input: str = "xyz",
                 interp_k: int = 32,
                 pos_hidden: int = 32, ot_iters: int = 1, ot_radius: float = 10.0, ot_chunk: int | None = 1024,
                 ot_keep_kernel: bool = True, ot_epsilon_init: float = 1.03,
                 refine_widths: Sequence[int] = (32, 64, 128), refine_k: int = 32,
                 ego_motion: Mapping[str, float] | None = None, fsc_weight: float = 0.3,
                 fsc_start_step: int = 1000, fsc_k: int = 16, fsc_temperature: float = 0.45):
        super().__init__()
        if voxel_input not in ("xyz", "occupancy") or (voxel_input == "occupancy" and in_channels != 1):
            raise ValueError(f"voxel_input must be 'xyz' or 'occupancy' (with in_channels 1), got {voxel_input!r} "
                             f"with in_channels {in_channels}")
        if not 1 <= fsc_k < refine_k:
            raise ValueError(f"fsc_k must be in 1..refine_k - 1 = {refine_k - 1}, got {fsc_k}")
        self.voxel_input, self.interp_k, self.refine_k = voxel_input, interp_k, refine_k
        self.fsc_weight, self.fsc_start_step, self.fsc_k, self.fsc_temperature = (
            fsc_weight, fsc_start_step, fsc_k, fsc_temperature)
        self.feature_net = backbone(in_channels=in_channels)
        # FCGF-style final 1x1 conv (bias, no norm, no activation): the U-Net's last block ends in a ReLU, and
        # non-negative features have cosines near 1 for every pair, so the transport would start uniform
        self.feature_head = nn.Linear(self.feature_net.out_channels, self.feature_net.out_channels)
        self.transformer = PointTransformer(self.feature_net.out_channels, pos_hidden, ot_chunk)
        self.transport = OptimalTransport(ot_iters, ot_radius, epsilon_init=ot_epsilon_init, chunk_size=ot_chunk,
                                          keep_kernel=ot_keep_kernel)
        self.refine = FlowRefine(refine_widths)
        self.ego_motion = None if ego_motion is None else EgoMotion(**ego_motion)
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))

    def point_features(self, batch: dict, cloud: str, xyz: torch.Tensor, offsets: list[int]) -> torch.Tensor:
        """[N, C] features of the cloud's points: U-Net voxel features, normalised, interpolated, attended."""
        x = sparse_input(batch, xyz.device, cloud=cloud)
        net_input = x if self.voxel_input == "xyz" else x.replace_feature(x.feats.new_ones(len(x.feats), 1))
        voxel_feats = normalize(self.feature_head(self.feature_net(net_input).feats))
        voxel_offsets = offsets_of(x.coords[:, 0], batch["batch_size"])
        feats = voxels_to_points(voxel_feats, x.feats[:, :3], voxel_offsets, xyz, offsets, self.interp_k)
        return self.transformer(feats, xyz, offsets)

    def forward(self, batch: dict):
        xyz1, xyz2 = batch["points"][:, :3], batch["points2"][:, :3]
        offsets1, offsets2 = batch["point_offsets"].tolist(), batch["point_offsets2"].tolist()
        f1 = self.point_features(batch, "points", xyz1, offsets1)
        f2 = self.point_features(batch, "points2", xyz2, offsets2)
        ot_flow = self.transport(f1, f2, xyz1, xyz2, offsets1, offsets2)
        neighbours = knn_per_sample(xyz1, offsets1, xyz1, offsets1, self.refine_k)
        flow = self.refine(ot_flow, xyz1, neighbours)
        if self.training:
            return {**self.loss(flow, f1, neighbours, batch),
                    "epe_ot": end_point_error(ot_flow, batch["flow"], batch.get("flow_mask"))}
        if self.ego_motion is not None:
            flow = self.ego_motion(xyz1, xyz2, flow, offsets1, offsets2)
        return self.predictions(flow, batch, offsets1)

    def loss(self, flow: torch.Tensor, feats: torch.Tensor, neighbours: torch.Tensor, batch: dict) -> dict:
        mask = batch.get("flow_mask")
        l1 = flow_l1(flow, batch["flow"], mask)
        fsc = flow.new_zeros(())
        if self.fsc_weight > 0 and int(self.step) >= self.fsc_start_step:
            fsc = fsc_loss(flow, feats, neighbours[:, 1:self.fsc_k + 1], self.fsc_temperature)
        self.step += 1
        return {"loss": l1 + self.fsc_weight * fsc, "loss_l1": l1.detach(), "loss_fsc": fsc.detach(),
                "epe": end_point_error(flow, batch["flow"], mask)}

    @staticmethod
    def predictions(flow: torch.Tensor, batch: dict, offsets: list[int]) -> list[dict]:
        out = []
        for b in range(batch["batch_size"]):
            s = slice(offsets[b], offsets[b + 1])
            pred = {"frame_id": batch["frame_id"][b], "flow": flow[s].detach().float().cpu().numpy(),
                    "points": batch["points"][s, :3].cpu().numpy()}
            for key, name in (("flow", "flow_gt"), ("flow_mask", "flow_mask")):
                if key in batch:
                    pred[name] = batch[key][s].cpu().numpy()
            out.append(pred)
        return out
