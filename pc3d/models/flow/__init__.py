"""Scene-flow models (SCTN-style sparse convolution with transformer refinement)."""
