"""CenterPoint's head: per task (a group of classes) a Gaussian heat map with focal loss and L1
regression of the centre offset, z, log size and heading (sin, cos) at each centre; optional velocity
(vx, vy, CenterPoint's nuScenes head) and IoU branches."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from pc3d.errors import ConfigError
from pc3d.geometry import CenterPointCoder, iou_3d_aligned
from pc3d.models.heads.center_targets import center_targets
from pc3d.models.heads.losses import gaussian_focal_loss

BRANCHES = {"center": 2, "center_z": 1, "dim": 3, "rot": 2}  # the regression, in CenterPointCoder.encode's order
VELOCITY = {"vel": 2}
# CenterPoint's nuScenes weights: velocity errors (m/s) weigh a fifth of the box terms
VELOCITY_CODE_WEIGHTS = (0.2, 0.2)


def _branch(cin: int, cout: int, channels: int, num_convs: int, bias: float = 0.0,
            final_kernel: int = 3) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_convs - 1):
        layers += [nn.Conv2d(cin, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU()]
        cin = channels
    last = nn.Conv2d(cin, cout, final_kernel, padding=final_kernel // 2)
    nn.init.constant_(last.bias, bias)
    return nn.Sequential(*layers, last)


class SeparateHead(nn.Module):
    """One task's branches: hm (num_classes), center (2), center_z (1), dim (3), rot (2) (, vel (2)) (, iou (1))."""

    def __init__(self, in_channels: int, num_classes: int, channels: int = 64, num_convs: int = 2,
                 with_iou: bool = False, with_velocity: bool = False, velocity_convs: int = 1, final_kernel: int = 3):
        super().__init__()
        outs = {"hm": num_classes, **BRANCHES, **(VELOCITY if with_velocity else {}),
                **({"iou": 1} if with_iou else {})}
        self.branches = nn.ModuleDict({
            name: _branch(in_channels, c, channels, velocity_convs if name == "vel" else num_convs,
                          -2.19 if name == "hm" else 0.0, final_kernel)
            for name, c in outs.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: branch(x) for name, branch in self.branches.items()}


class CenterHead(nn.Module):
    """Shared 3x3 conv, then one SeparateHead per task over the BEV map [B, C, H, W].

    tasks: class groups by name, e.g. [[Car], [Pedestrian, Cyclist]]; class_names: the dataset's
    list (labels are 1 + index in it). out_stride: BEV cells per voxel (the 3D backbone's stride).
    loss(out, batch) -> {"loss", "loss_hm", "loss_reg"(, "loss_iou")}; predict(out) -> per frame
    (boxes [N, 7 (+2)], scores [N], labels [N]), each task's top max_per_task whose heat is at least score_threshold.
    shared_channels: width of the shared 3x3 conv, or None for none (the branches read the BEV map itself);
    final_kernel: 1 or 3, the last conv of every branch (InsMOS's head: no shared conv, one 1x1 conv a branch).
    with_velocity: a vel branch regresses each box's velocity (vx, vy in m/s, the boxes' columns 7, 8; it needs
    gt_boxes [M, 9], and a box whose velocity is NaN, unknown, adds no velocity loss); boxes then have 9 columns.
    velocity_convs: the vel branch's convolutions (CenterPoint: 2, as every branch). Default 1, a 3x3 conv on the
    shared features: a private BN-ReLU layer, trained only at object centres, died at the vehicle centres of a
    two-sweep Waymo run (no hidden unit active there: the L1 loss pulls the output to the median, 0, while most
    cars are parked and the features cannot yet tell them apart), and kept 2-5 % alive in two runs that survived; the
    shared features stay alive for the other branches (README, Detection: velocities).
    code_weights: the L1 weight of each regression channel (8, or 10 with velocity; default 1 each and 0.2 for
    vx, vy).
    with_iou: an IoU branch regresses each box's 3D IoU with its ground truth (as 2 * IoU - 1) and
    predict rectifies scores to heat ** (1 - a) * IoU ** a; iou_rectifier a: one value or one per class. The score
    threshold applies to the heat, before rectification, as in OpenPCDet's DSVT: heat ** 0.32 lifts a cell of heat
    0.001 to 0.11, and the IoU branch, trained only at object centres, predicts anything elsewhere, so a threshold
    on the rectified score kept 260-500 boxes a frame on simulated Waymo (24 without the branch), which cost a
    2 Hz tracker 10-18 % vehicle mismatches (README, Detection: the IoU branch).
    """

    def __init__(self, in_channels: int, class_names: Sequence[str], tasks: Sequence[Sequence[str]],
                 voxel_size: Sequence[float], point_cloud_range: Sequence[float], out_stride: int,
                 shared_channels: int | None = 64, head_channels: int = 64, num_head_convs: int = 2,
                 final_kernel: int = 3, with_iou: bool = False,
                 hm_weight: float = 1.0, reg_weight: float = 2.0, iou_weight: float = 1.0,
                 code_weights: Sequence[float] | None = None, with_velocity: bool = False, velocity_convs: int = 1,
                 max_objs: int = 500, min_overlap: float = 0.1,
                 min_radius: int = 2, score_threshold: float = 0.1, max_per_task: int = 500,
                 iou_rectifier: float | Sequence[float] = 0.68, post_center_range: Sequence[float] | None = None):
        super().__init__()
        self.class_names = list(class_names)
        self.tasks = [[self.class_names.index(c) + 1 for c in task] for task in tasks]
        self.coder = CenterPointCoder(voxel_size, point_cloud_range, out_stride)
        if final_kernel not in (1, 3):
            raise ConfigError(f"CenterHead final_kernel must be 1 or 3, got {final_kernel!r}")
        self.shared = nn.Identity() if shared_channels is None else nn.Sequential(
            nn.Conv2d(in_channels, shared_channels, 3, padding=1, bias=False), nn.BatchNorm2d(shared_channels),
            nn.ReLU())
        width = in_channels if shared_channels is None else shared_channels
        self.heads = nn.ModuleList(SeparateHead(width, len(t), head_channels, num_head_convs, with_iou,
                                                with_velocity, velocity_convs, final_kernel) for t in self.tasks)
        self.with_iou, self.with_velocity = with_iou, with_velocity
        self.regression = [*BRANCHES, *(VELOCITY if with_velocity else {})]
        self.weights = (hm_weight, reg_weight, iou_weight)
        width = sum({**BRANCHES, **VELOCITY}[name] for name in self.regression)
        if code_weights is None:
            code_weights = (1.0,) * 8 + (VELOCITY_CODE_WEIGHTS if with_velocity else ())
        if len(code_weights) != width:
            names = "offset x, y, z, log dx, dy, dz, sin, cos" + (", vx, vy" if with_velocity else "")
            raise ConfigError(f"code_weights needs one weight per regression channel ({width}: {names}), got "
                              f"{len(code_weights)}")
        self.register_buffer("code_weights", torch.tensor(code_weights, dtype=torch.float32), persistent=False)
        self.max_objs, self.min_overlap, self.min_radius = max_objs, min_overlap, min_radius
        self.score_threshold, self.max_per_task = score_threshold, max_per_task
        rectifier = torch.as_tensor(iou_rectifier, dtype=torch.float32).reshape(-1)
        if len(rectifier) not in (1, len(self.class_names)):
            raise ConfigError(f"iou_rectifier needs one value or one per class ({len(self.class_names)}), got "
                              f"{len(rectifier)}")
        rectifier = rectifier.expand(len(self.class_names))
        # indexed by label (1..K): score = heat ** (1 - a) * iou ** a, one a per class (DSVT: 0.68, 0.71, 0.65)
        self.register_buffer("iou_rectifier", torch.cat([rectifier.new_zeros(1), rectifier]), persistent=False)
        self.post_center_range = None if post_center_range is None else list(post_center_range)

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Per task, its maps [B, C, H, W] in float32 (under bf16 autocast too: decoding a cell index plus an
        offset in bf16 rounds a centre 40 m out to 0.25 m, and 8-bit heatmap scores tie in the ranking)."""
        x = self.shared(x)
        return [{k: v.float() for k, v in head(x).items()} for head in self.heads]

    def targets(self, batch: dict, map_size: tuple[int, int], device) -> list[dict[str, torch.Tensor]]:
        """Per task, the batch's stacked center_targets (torch, on `device`)."""
        gt = batch["gt_boxes"].cpu().numpy()
        if self.with_velocity and gt.shape[-1] < 10:
            raise ConfigError("CenterHead with_velocity: the batch's gt_boxes have no velocity columns (the dataset "
                              "gives boxes [M, 7]); train without model.dense_head.with_velocity")
        out = []
        for task in self.tasks:
            frames = []
            for i, n in enumerate(batch["num_gt"].tolist()):
                labels = gt[i, :n, -1].astype(np.int64)
                sel = np.isin(labels, task)
                classes = np.asarray([task.index(label) for label in labels[sel]], np.int64)  # channel in task
                frames.append(center_targets(gt[i, :n, :-1][sel], classes, len(task), map_size, self.coder,
                                             self.max_objs, self.min_overlap, self.min_radius, self.with_velocity))
            out.append({k: torch.from_numpy(np.stack([f[k] for f in frames])).to(device) for k in frames[0]})
        return out

    def decode_at(self, pred: dict[str, torch.Tensor], index: torch.Tensor, width: int) -> torch.Tensor:
        """Boxes [B, K, 7 (+2)] decoded from the regression maps at flat cell indices index [B, K]."""
        def gather(t: torch.Tensor) -> torch.Tensor:
            flat = t.flatten(2)  # [B, C, H*W]
            return flat.gather(2, index[:, None, :].expand(-1, flat.shape[1], -1)).transpose(1, 2)

        cells = torch.stack([index % width, index // width], -1).to(pred["center"].dtype)
        rot = gather(pred["rot"])
        return self.coder.decode(gather(pred["center"]), gather(pred["center_z"]), gather(pred["dim"]),
                                 rot[..., 0:1], rot[..., 1:2], gather(pred["vel"]) if self.with_velocity else None,
                                 cells)

    def loss(self, preds: list[dict], batch: dict) -> dict:
        h, w = preds[0]["hm"].shape[2:]
        targets = self.targets(batch, (h, w), preds[0]["hm"].device)
        loss_hm = loss_reg = loss_iou = 0.0
        for pred, tgt in zip(preds, targets, strict=True):
            loss_hm = loss_hm + gaussian_focal_loss(pred["hm"], tgt["heatmap"])
            reg = torch.cat([pred[k] for k in self.regression], 1).flatten(2)  # [B, 8 (+2), H*W]
            reg = reg.gather(2, tgt["index"][:, None, :].expand(-1, reg.shape[1], -1)).transpose(1, 2)
            mask = tgt["mask"].float()
            num = mask.sum().clamp(min=1)
            known = torch.ones_like(tgt["targets"], dtype=torch.bool)
            known[..., 8:] = torch.isfinite(tgt["targets"][..., 8:])  # an unknown velocity (NaN) adds no loss
            error = torch.where(known, reg - tgt["targets"], 0.0).abs()
            loss_reg = loss_reg + (error * self.code_weights * mask[..., None]).sum() / num
            if self.with_iou:
                with torch.no_grad():
                    boxes = self.decode_at(pred, tgt["index"], w)
                    # a non-finite box (sizes overflowing exp) has no IoU to measure: target 0 (its log sizes' large
                    # regression loss is what teaches it); iou_3d_aligned would refuse it
                    m = tgt["mask"] & torch.isfinite(boxes).all(-1)
                    iou = torch.zeros_like(mask)
                    if m.any():
                        iou[m] = iou_3d_aligned(boxes[m].float(), tgt["boxes"][m].float()).to(iou.dtype)
                p = pred["iou"].flatten(2).gather(2, tgt["index"][:, None, :])[:, 0]
                loss_iou = loss_iou + ((p - (2 * iou - 1)).abs() * mask).sum() / num
        wh, wr, wi = self.weights
        loss = wh * loss_hm + wr * loss_reg + (wi * loss_iou if self.with_iou else 0.0)
        out = {"loss": loss, "loss_hm": loss_hm.detach(), "loss_reg": loss_reg.detach()}
        if self.with_iou:
            out["loss_iou"] = loss_iou.detach()
        return out

    @torch.no_grad()
    def predict(self, preds: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        b = preds[0]["hm"].shape[0]
        w = preds[0]["hm"].shape[3]
        per_frame: list[list] = [[] for _ in range(b)]
        for pred, task in zip(preds, self.tasks, strict=True):
            heat = torch.sigmoid(pred["hm"]).flatten(1)  # [B, n * H * W]
            k = min(self.max_per_task, heat.shape[1])
            top_heat, flat = heat.topk(k, dim=1)
            scores = top_heat
            cells = pred["hm"].shape[2] * w
            classes, index = flat // cells, flat % cells
            boxes = self.decode_at(pred, index, w)
            labels = torch.as_tensor(task, device=flat.device)[classes]
            if self.with_iou:
                iou = pred["iou"].flatten(2)[:, 0].gather(1, index).clamp(-1, 1)
                a = self.iou_rectifier[labels].to(scores.dtype)
                scores = scores ** (1 - a) * ((iou + 1) / 2) ** a
            for i in range(b):
                keep = top_heat[i] >= self.score_threshold  # the heat, not the rectified score (see the docstring)
                if self.post_center_range is not None:
                    r = torch.as_tensor(self.post_center_range, device=boxes.device)
                    keep &= ((boxes[i, :, :3] >= r[:3]) & (boxes[i, :, :3] <= r[3:])).all(1)
                per_frame[i].append((boxes[i][keep], scores[i][keep], labels[i][keep]))
        return [tuple(torch.cat(parts) for parts in zip(*frame, strict=True)) for frame in per_frame]
