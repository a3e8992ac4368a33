"""Optimal transport between the two clouds' point features (FLOT's relaxed Sinkhorn, as SCTN uses it).

    C = 1 - cos(f1_i, f2_j)                  cost [n, m] (features L2-normalised here, + 1e-8)
    K = exp(-C / epsilon) * [|x1_i - x2_j| < radius]   transport only between points within `radius` (10 m)
    power = gamma / (gamma + epsilon)        mass relaxation (unbalanced OT)
    a = 1 / n; repeat iters times:  b = ((1 / m) / (K^T a + 1e-8))^power,  a = ((1 / n) / (K b + 1e-8))^power
    T = diag(a) K diag(b)
    ot_flow_i = (T x2)_i / (sum_j T_ij + 1e-8) - x1_i

epsilon = exp(log_epsilon) + 0.03 and gamma = exp(log_gamma) are learned; FLOT starts both at log 0 (epsilon 1.03,
gamma 1), `epsilon_init` / `gamma_init` set other starting values.
K is built in blocks of `chunk_size` rows of the first cloud (so no op ever makes a full n x m temporary
beyond K itself, and backward works block by block). keep_kernel=True (default) builds each block once
and reuses it for every Sinkhorn product and for backward: n x m floats held (268 MB at 8,192 points),
one build per pair. keep_kernel=False rebuilds a block for each product (and again in backward through
torch.utils.checkpoint): memory O(chunk_size x m), about four times the compute at one iteration.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def transport_kernel(f1: torch.Tensor, f2: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor,
                     epsilon: torch.Tensor, radius: float) -> torch.Tensor:
    """K [n, m] = exp(-(1 - f1 f2^T) / epsilon) where |x1_i - x2_j| < radius, else 0.
    f1 [n, C], f2 [m, C] L2-normalised; x1 [n, 3], x2 [m, 3]; epsilon a [1] tensor."""
    with torch.no_grad():
        far = torch.cdist(x1, x2) >= radius
    logits = torch.addmm(-1 / epsilon, f1 / epsilon, f2.T)  # (f1 f2^T - 1) / epsilon in one product
    return logits.masked_fill_(far, -torch.inf).exp_()


def _k_times(f1, f2, x1, x2, epsilon, radius, rhs):
    return transport_kernel(f1, f2, x1, x2, epsilon, radius) @ rhs


def _kt_times(f1, f2, x1, x2, epsilon, radius, lhs):
    return transport_kernel(f1, f2, x1, x2, epsilon, radius).T @ lhs


class _BlockKernel:
    """K of one pair as row blocks: kept (built once) or rebuilt for each product (see the module docstring)."""

    def __init__(self, f1, f2, x1, x2, epsilon, radius, chunk_size, keep):
        step = chunk_size or max(len(f1), 1)
        self.rows = [slice(i, i + step) for i in range(0, len(f1), step)]
        self.f1, self.f2, self.x1, self.x2, self.epsilon, self.radius = f1, f2, x1, x2, epsilon, radius
        self.blocks = [transport_kernel(f1[r], f2, x1[r], x2, epsilon, radius) for r in self.rows] if keep else None
        self.recompute = torch.is_grad_enabled() and any(t.requires_grad for t in (f1, f2, epsilon))

    def _rebuilt(self, fn, r, operand):
        args = (self.f1[r], self.f2, self.x1[r], self.x2, self.epsilon, self.radius, operand)
        return checkpoint(fn, *args, use_reentrant=False) if self.recompute else fn(*args)

    def times(self, rhs: torch.Tensor) -> torch.Tensor:
        """K @ rhs: [n, c] for rhs [m, c]."""
        if self.blocks is not None:
            return torch.cat([k @ rhs for k in self.blocks])
        return torch.cat([self._rebuilt(_k_times, r, rhs) for r in self.rows])

    def transposed_times(self, lhs: torch.Tensor) -> torch.Tensor:
        """K^T @ lhs: [m, c] for lhs [n, c]."""
        if self.blocks is not None:
            return sum(k.T @ lhs[r] for k, r in zip(self.blocks, self.rows, strict=True))
        return sum(self._rebuilt(_kt_times, r, lhs[r]) for r in self.rows)


def normalize(feats: torch.Tensor) -> torch.Tensor:
    """Rows divided by sqrt(|row|^2 + 1e-8) (FLOT's normalisation before the cosine cost)."""
    return feats / torch.sqrt((feats * feats).sum(-1, keepdim=True) + 1e-8)


def sinkhorn_flow(f1: torch.Tensor, f2: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor, epsilon: torch.Tensor,
                  gamma: torch.Tensor, iters: int = 1, radius: float = 10.0, chunk_size: int | None = 1024,
                  keep_kernel: bool = True) -> torch.Tensor:
    """ot_flow [n, 3] of one pair (see the module docstring). f1 [n, C], f2 [m, C] point features; x1 [n, 3],
    x2 [m, 3] positions; epsilon, gamma: positive [1] tensors; iters >= 1; chunk_size: rows of K per
    block (None: all at once); keep_kernel: build K once and keep it, or rebuild it per product. Float32 (or
    float64) whatever autocast asks (as FLOT): in bf16 the positions round to 0.125-0.25 m at 16-64 m and the transport
    flow's error reaches the size of a good EPE3D; in fp16 the 1e-8 guards round to 0 and weak matches give NaN.
    An empty cloud gives no flow, or flow 0 for every point of the first cloud."""
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    n, m = len(f1), len(f2)
    wide = [t if t.dtype in (torch.float32, torch.float64) else t.float() for t in (f1, f2, x1, x2, epsilon, gamma)]
    if n == 0 or m == 0:
        return wide[2].new_zeros((n, 3))
    with torch.autocast(f1.device.type, enabled=False):
        return _sinkhorn(*wide, iters, radius, chunk_size, keep_kernel)


def _sinkhorn(f1, f2, x1, x2, epsilon, gamma, iters, radius, chunk_size, keep_kernel) -> torch.Tensor:
    f1, f2 = normalize(f1), normalize(f2)
    n, m = len(f1), len(f2)
    kernel = _BlockKernel(f1, f2, x1, x2, epsilon, radius, chunk_size, keep_kernel)
    power = gamma / (gamma + epsilon)
    a = f1.new_full((n, 1), 1.0 / n)
    for _ in range(iters):
        b = ((1.0 / m) / (kernel.transposed_times(a) + 1e-8)) ** power
        # K [b, b x2]: column 0 gives the a update (and T's row sums), columns 1-3 T x2 (the last pass's)
        kb = kernel.times(torch.cat([b, b * x2], 1))
        a = ((1.0 / n) / (kb[:, :1] + 1e-8)) ** power
    return a * kb[:, 1:] / (a * kb[:, :1] + 1e-8) - x1


class OptimalTransport(nn.Module):
    """Learned-entropy, mass-relaxed optimal transport of the first cloud's points onto the second.

    iters: Sinkhorn iterations (>= 1; FLOT trains with 1); radius: support radius in metres (10);
    epsilon_min: floor added to exp(log_epsilon) (0.03); epsilon_init, gamma_init: starting values (FLOT: 1.03
    and 1); chunk_size: rows of K per block (None: one block); keep_kernel: build K once per pair and keep it
    (True), or rebuild it per product (memory O(chunk_size x m)).
    """

    def __init__(self, iters: int = 1, radius: float = 10.0, epsilon_min: float = 0.03, epsilon_init: float = 1.03,
                 gamma_init: float = 1.0, chunk_size: int | None = 1024, keep_kernel: bool = True):
        super().__init__()
        if iters < 1:
            raise ValueError(f"iters must be >= 1, got {iters}")
        if not epsilon_init > epsilon_min or not gamma_init > 0:
            raise ValueError(f"need epsilon_init > epsilon_min = {epsilon_min} and gamma_init > 0, "
                             f"got {epsilon_init}, {gamma_init}")
        self.iters, self.radius, self.epsilon_min, self.chunk_size = iters, radius, epsilon_min, chunk_size
        self.keep_kernel = keep_kernel
        self.log_epsilon = nn.Parameter(torch.full((1,), math.log(epsilon_init - epsilon_min)))
        self.log_gamma = nn.Parameter(torch.full((1,), math.log(gamma_init)))

    @property
    def epsilon(self) -> torch.Tensor:
        return torch.exp(self.log_epsilon) + self.epsilon_min

    @property
    def gamma(self) -> torch.Tensor:
        return torch.exp(self.log_gamma)

    def forward(self, f1: torch.Tensor, f2: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor,
                offsets1: list[int], offsets2: list[int]) -> torch.Tensor:
        """ot_flow [N, 3] of every first-cloud point, pair by pair (row offsets B + 1 of each cloud)."""
        epsilon, gamma = self.epsilon, self.gamma
        out = []
        for b in range(len(offsets1) - 1):
            s1, s2 = slice(offsets1[b], offsets1[b + 1]), slice(offsets2[b], offsets2[b + 1])
            out.append(sinkhorn_flow(f1[s1], f2[s2], x1[s1], x2[s2], epsilon, gamma, self.iters, self.radius,
                                     self.chunk_size, self.keep_kernel))
        return torch.cat(out)
