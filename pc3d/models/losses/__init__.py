"""Segmentation losses: class-weighted cross-entropy with an ignore index, and Lovasz-softmax."""
from pc3d.models.losses.lovasz import lovasz_softmax
from pc3d.models.losses.segmentation import SegmentationLoss

__all__ = ["SegmentationLoss", "lovasz_softmax"]
