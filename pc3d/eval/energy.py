"""Energy of a spiking network against its ReLU twin of the same widths, from per-sample layer counts.

Input: one dict per sample, {layer name: counts} as pc3d.models.snn.blocks.conv_counts makes them
(neurons, spikes, active, macs, sops, spiking), i.e. a prediction's ``measurements``. A sample's counts cover
every pass the model ran over it: under test-time augmentation all its views are counted (the energy of what
actually ran, not of one view), and the firing rates are over the neurons of all passes.

Conventions (E-3DSNN, after Horowitz's 45 nm figures):
- an accumulate costs E_AC = 0.9 pJ, a multiply-accumulate E_MAC = 4.6 pJ;
- a layer whose input is spikes performs ``sops`` accumulates (each active pair adds its weight row once per
  input spike); a layer whose input is real valued (the encoding conv) performs ``macs`` MACs;
- the ReLU twin performs ``macs`` MACs in every layer (every active pair multiplies);
- firing rate of a layer: spikes / neurons at its input, the mean spike count per neuron (0..4);
  active rate: the share of those neurons with at least one spike;
- figures are means per sample: operations in G (1e9), energy in mJ. Layers outside the measured ones
  (norms, dense heads) are not counted, for either network.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

E_AC_PJ = 0.9
E_MAC_PJ = 4.6
_COUNTS = ("neurons", "spikes", "active", "macs", "sops")


def layer_totals(measurements: Sequence[Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, float]]:
    """{layer: summed counts over the samples (+ "spiking": 0 / 1)} in first-seen layer order."""
    totals: dict[str, dict[str, float]] = {}
    for sample in measurements:
        for layer, counts in sample.items():
            t = totals.setdefault(layer, dict.fromkeys(_COUNTS, 0.0) | {"spiking": float(counts["spiking"])})
            for key in _COUNTS:
                t[key] += float(counts[key])
    return totals


def energy_summary(measurements: Sequence[Mapping[str, Mapping[str, float]]], e_ac: float = E_AC_PJ,
                   e_mac: float = E_MAC_PJ) -> dict:
    """Per-sample means for the spiking network and its ReLU twin, and each layer's rates.

    Returns {"sops_G", "macs_G" (the spiking network's real-valued layers), "relu_macs_G", "energy_mJ",
    "relu_energy_mJ", "energy_ratio" (ReLU / spiking), "firing_rate" and "active_rate" (over all spiking
    layers' neurons), "layers": {name: {"firing_rate", "active_rate", "sops_G", "macs_G", "spiking"}}}.
    """
    n = max(1, len(measurements))
    totals = layer_totals(measurements)
    spiking = [t for t in totals.values() if t["spiking"]]
    sops = sum(t["sops"] for t in spiking) / n
    macs = sum(t["macs"] for t in totals.values() if not t["spiking"]) / n
    relu_macs = sum(t["macs"] for t in totals.values()) / n
    energy = (e_ac * sops + e_mac * macs) * 1e-9  # pJ -> mJ
    relu_energy = e_mac * relu_macs * 1e-9
    neurons = sum(t["neurons"] for t in spiking)

    def rate(t: Mapping[str, float], key: str) -> float:
        return t[key] / t["neurons"] if t["neurons"] else 0.0

    return {"sops_G": sops * 1e-9, "macs_G": macs * 1e-9, "relu_macs_G": relu_macs * 1e-9,
            "energy_mJ": energy, "relu_energy_mJ": relu_energy,
            "energy_ratio": relu_energy / energy if energy else 0.0,
            "firing_rate": sum(t["spikes"] for t in spiking) / neurons if neurons else 0.0,
            "active_rate": sum(t["active"] for t in spiking) / neurons if neurons else 0.0,
            "layers": {name: {"firing_rate": rate(t, "spikes"), "active_rate": rate(t, "active"),
                              "sops_G": t["sops"] / n * 1e-9, "macs_G": t["macs"] / n * 1e-9,
                              "spiking": bool(t["spiking"])}
                       for name, t in totals.items()}}


def energy_table(summary: Mapping) -> str:
    """The per-layer markdown table of an energy_summary, then the totals."""
    rows = ["| layer | input | firing rate | active % | SOPs (G) | ReLU-twin MACs (G) |", "|---|---|---|---|---|---|"]
    for name, layer in summary["layers"].items():
        rates = (f"{layer['firing_rate']:.3f} | {100 * layer['active_rate']:.1f}" if layer["spiking"] else "- | -")
        rows.append(f"| {name} | {'spikes' if layer['spiking'] else 'real'} | {rates} | {layer['sops_G']:.4f} | "
                    f"{layer['macs_G']:.4f} |")
    rows.append(f"\nper sample: {summary['sops_G']:.4f} G SOPs + {summary['macs_G']:.4f} G MACs = "
                f"{summary['energy_mJ']:.4f} mJ; ReLU twin {summary['relu_macs_G']:.4f} G MACs = "
                f"{summary['relu_energy_mJ']:.4f} mJ ({summary['energy_ratio']:.1f}x); "
                f"firing rate {summary['firing_rate']:.3f}, active {100 * summary['active_rate']:.1f} %")
    return "\n".join(rows)
