"""Moving-object segmentation over scan sequences (InsMOS-style 4D sparse convolution)."""
