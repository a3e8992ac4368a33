"""Binary Bayes filter over overlapping windows (4DMOS, Mersch et al. 2022): a scan lies in the windows of
several consecutive frames, and each window's network gives every point a log-odds
l = log p(moving) / p(static). The filtered log-odds of a point, a binary Bayes filter started at the prior, is

    logit(prior) + sum over the windows that measured it of (l - logit(prior)),   prior = 0.25 (4DMOS),

which is 4DMOS's confidences_to_labels.py ("bayes": the first window's l, plus l - logit(prior) for each
further one), and the point is moving when it is > 0 (probability > 0.5). One window alone decides as it would
unfiltered; each further window adds -logit(prior) (+1.1 at 0.25: a prior below 0.5 tips points to moving as
windows accumulate; 0.5 adds nothing). A point no window measured (outside every voxel grid) keeps the fallback
prediction (the single-window one).

    f = BinaryBayesFilter()
    f.add(scan, log_odds, measured)          # once per window holding the scan
    moving = f.pop(scan, fallback)           # uint8 [N] when no later window will hold it
"""
from __future__ import annotations

import numpy as np

from pc3d.errors import ConfigError, DataFormatError

PRIOR = 0.25


def logit(p: float) -> float:
    """log(p / (1 - p)) of a probability in (0, 1)."""
    if not 0.0 < p < 1.0:
        raise ConfigError(f"a prior must be a probability in (0, 1), got {p!r}")
    return float(np.log(p / (1.0 - p)))


class BinaryBayesFilter:
    """Per scan: the belief float64 [N] (sum of l - logit(prior); the filtered log-odds is logit(prior) + belief)
    and the count of measurements per point."""

    def __init__(self, prior: float = PRIOR):
        self.prior_log_odds = logit(prior)
        self.beliefs: dict[int, np.ndarray] = {}
        self.counts: dict[int, np.ndarray] = {}

    def add(self, scan: int, log_odds: np.ndarray, measured: np.ndarray | None = None) -> None:
        """One window's log-odds [N] of the points of `scan` (measured [N]: where the window had a voxel)."""
        log_odds = np.asarray(log_odds, np.float64)
        measured = np.ones(len(log_odds), bool) if measured is None else np.asarray(measured, bool)
        if scan not in self.beliefs:
            self.beliefs[scan], self.counts[scan] = np.zeros(len(log_odds)), np.zeros(len(log_odds), np.int64)
        if len(log_odds) != len(self.beliefs[scan]) or len(measured) != len(log_odds):
            raise DataFormatError(f"scan {scan}", f"{len(log_odds)} log-odds for a scan of {len(self.beliefs[scan])} "
                                                  "points")
        self.beliefs[scan] += np.where(measured, log_odds - self.prior_log_odds, 0.0)
        self.counts[scan] += measured

    def moving(self, scan: int, fallback: np.ndarray | None = None) -> np.ndarray:
        """uint8 [N]: filtered log-odds logit(prior) + belief > 0 where measured, else `fallback` (else static)."""
        out = (self.prior_log_odds + self.beliefs[scan] > 0).astype(np.uint8)
        unseen = self.counts[scan] == 0
        if unseen.any():
            out[unseen] = 0 if fallback is None else np.asarray(fallback, np.uint8)[unseen]
        return out

    def pop(self, scan: int, fallback: np.ndarray | None = None) -> np.ndarray:
        """``moving(scan, fallback)``, then forget the scan."""
        out = self.moving(scan, fallback)
        del self.beliefs[scan], self.counts[scan]
        return out
