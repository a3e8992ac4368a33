"""Spiking sparse-convolution backbones (E-3DSNN-style) and their neuron models."""
