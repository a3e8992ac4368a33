"""Energy report beside a task's metrics: wraps the task's hook and adds pc3d.eval.energy's per-sample
figures of a spiking network (from the predictions' ``measurements``) and its ReLU twin.

Adds ``energy/sops_G``, ``energy/relu_macs_G``, ``energy/mJ``, ``energy/relu_mJ``, ``energy/ratio``,
``energy/firing_rate`` and ``energy/active_rate``; the per-layer table joins the inner hook's ``last_table``.
The figures are of every pass the model ran per sample: under test-time augmentation (``tools/test.py tta=...``)
all views are counted, the energy of what actually ran (a layer's counts add up over the passes of one measuring
block, pc3d.models.snn.blocks, and are handed over and reset once per batch by pc3d.engine.evaluator).
"""
from __future__ import annotations

from collections.abc import Callable

from pc3d.errors import ConfigError
from pc3d.eval.energy import E_AC_PJ, E_MAC_PJ, energy_summary, energy_table


class EnergyReport:
    """inner: the task's hook (dataset, predictions) -> metrics; e_ac / e_mac: pJ per accumulate / MAC."""

    def __init__(self, inner: Callable, e_ac: float = E_AC_PJ, e_mac: float = E_MAC_PJ):
        self.inner, self.e_ac, self.e_mac = inner, e_ac, e_mac
        self.last_table = ""

    def __call__(self, dataset, predictions: list[dict]) -> dict:
        metrics = dict(self.inner(dataset, predictions))
        measured = [p.get("measurements") for p in predictions]
        if not predictions or any(m is None for m in measured):
            raise ConfigError("EnergyReport: the predictions carry no measurements (is the model spiking, "
                              "with SpikeConv layers?)")
        summary = energy_summary(measured, self.e_ac, self.e_mac)
        metrics.update({"energy/sops_G": summary["sops_G"], "energy/relu_macs_G": summary["relu_macs_G"],
                        "energy/mJ": summary["energy_mJ"], "energy/relu_mJ": summary["relu_energy_mJ"],
                        "energy/ratio": summary["energy_ratio"], "energy/firing_rate": summary["firing_rate"],
                        "energy/active_rate": summary["active_rate"]})
        inner_table = getattr(self.inner, "last_table", "") or ""
        self.last_table = (inner_table + "\n\n" if inner_table else "") + energy_table(summary)
        return metrics
