"""Spiking sparse-convolution networks (E-3DSNN): the multi-spike neuron, spiking units and blocks, and the
classification, segmentation and detection backbones built from them."""
from pc3d.models.snn.bev import SpikingBEVBackbone
from pc3d.models.snn.blocks import SpikeConv, SpikingBasicBlock, SpikingBlock, SpikingFuse, conv_counts
from pc3d.models.snn.classifier import SpikingClassifier
from pc3d.models.snn.neuron import MultiSpike, multi_spike
from pc3d.models.snn.unet import SpikingUNet
from pc3d.models.snn.voxel_backbone import SpikingVoxelBackBone8x, SpikingVoxelResBackBone8x

__all__ = ["MultiSpike", "SpikeConv", "SpikingBasicBlock", "SpikingBlock", "SpikingClassifier", "SpikingFuse",
           "SpikingBEVBackbone", "SpikingUNet", "SpikingVoxelBackBone8x", "SpikingVoxelResBackBone8x", "conv_counts",
           "multi_spike"]
