"""Prediction heads: anchor head, CenterPoint head, point-level segmentation heads, and their
losses and target assignment.
"""
