"""Scene-flow models: SCTN (sparse conv features, point transformer, optimal transport, refinement)."""
from pc3d.models.flow.sctn import SCTN

__all__ = ["SCTN"]
