"""tools/infer.py --bayes-filter: 4DMOS's binary Bayes filter over the overlapping windows of a MOS stream.

A scan lies in the windows of itself and of the n_past_scans frames after it. Each window's network gives
every point of every scan in it a log-odds (the model's ``return_log_odds``; a past scan's raw point takes
its reduced point's value, ``scan_window.scan_log_odds``); ``pc3d.eval.bayes_filter`` sums them per point.
A scan is final once the window of the frame n_past_scans after it has been seen (no later window holds
it): only then is it written, moving where its filtered log-odds is > 0 (a point no window measured keeps its
own window's flag). At a sequence change and at the end, the scans still open are written with the windows they had.
So files appear n_past_scans frames late, and renders show each scan when it is written (the last
n_past_scans scans of a sequence are written but not rendered).
"""
from __future__ import annotations

import numpy as np

from pc3d.eval.bayes_filter import PRIOR, BinaryBayesFilter
from pc3d.infer.scan_window import scan_log_odds


class FilteredMosOutput:
    """Wraps a MosOutput: write(frame, pred) takes a window's prediction with ``log_odds`` / ``measured`` and
    the frame's ``extra["window"]`` (the ScanWindow sample's point_frame and metadata, set by
    WindowedPrepare); returns the Scene of the scan it finalised, if any."""

    def __init__(self, inner, n_past_scans: int, prior: float = PRIOR):
        self.inner, self.n_past_scans = inner, int(n_past_scans)
        self.filter = BinaryBayesFilter(prior)
        self.pending: dict[int, tuple] = {}  # scan -> (its frame, its own window's moving flags)
        self.sequence = None

    def write(self, frame, pred: dict):
        if frame.sequence != self.sequence:
            self._flush()
            self.sequence = frame.sequence
        window = frame.extra["window"]
        current = int(window["metadata"]["window_scans"][0])
        self.pending[current] = (frame, np.asarray(pred["moving"], np.uint8))
        for scan, log_odds, measured in scan_log_odds(window, pred["log_odds"], pred["measured"]):
            if scan in self.pending:  # scans already written (or never seen) are not tracked
                self.filter.add(scan, log_odds, measured)
        scene = None
        for scan in sorted(s for s in self.pending if s <= current - self.n_past_scans):
            scene = self._write(scan)
        return scene

    def _write(self, scan: int):
        frame, own = self.pending.pop(scan)
        return self.inner.write(frame, {"frame_id": frame.frame_id, "moving": self.filter.pop(scan, own)})

    def _flush(self) -> None:
        for scan in sorted(self.pending):
            self._write(scan)

    def close(self) -> str:
        self._flush()
        return (f"{self.inner.close()}; binary Bayes filter over the {self.n_past_scans + 1} windows holding each "
                f"scan (prior {np.exp(self.filter.prior_log_odds) / (1 + np.exp(self.filter.prior_log_odds)):g})")
