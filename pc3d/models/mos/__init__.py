"""Moving-object segmentation over scan sequences (4DMOS / InsMOS-style 4D sparse convolution)."""
from pc3d.models.mos.insmos import InsMOS
from pc3d.models.mos.mos_net import MosNet
from pc3d.models.mos.motion_net import MotionUNet

__all__ = ["InsMOS", "MosNet", "MotionUNet"]
