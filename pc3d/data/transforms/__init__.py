"""Composable, seeded transforms on samples of the batch contract (pc3d.data.batch).

Build them in a dataset config as a list of hydra ``_target_`` entries, e.g.

    transforms:
      - {_target_: pc3d.data.transforms.GTSampling, database: ..., class_names: ..., sample_groups: {Car: 15}}
      - {_target_: pc3d.data.transforms.RandomFlip, axes: [x]}
      - {_target_: pc3d.data.transforms.GlobalRotation, angle: [-0.785, 0.785]}
"""
from .compose import Compose, Transform, instantiate
from .elastic import ElasticDistortion
from .features import TanhFeatures
from .global_ops import (
    CenterShift,
    GlobalRotation,
    GlobalScaling,
    GlobalTilt,
    GlobalTranslation,
    RandomFlip,
    affine_sample,
    flip_sample,
    rotate_sample,
    scale_sample,
    translate_sample,
)
from .indoor_ops import BoxesFromInstances
from .object_ops import GTSampling, ObjectNoise
from .point_ops import (
    ClipToRange,
    PointShuffle,
    RandomDrop,
    RandomDropout,
    RangeCrop,
    SamplePoints,
    SphereCrop,
    in_range,
)
from .segmentation import ChromaticAutoContrast, ColorJitter, PointJitter

__all__ = [
    "BoxesFromInstances", "CenterShift", "ChromaticAutoContrast", "ClipToRange", "ColorJitter", "Compose",
    "ElasticDistortion", "GTSampling", "GlobalRotation", "GlobalScaling", "GlobalTilt", "GlobalTranslation",
    "ObjectNoise", "PointJitter", "PointShuffle", "RandomDrop", "RandomDropout", "RandomFlip", "RangeCrop",
    "SamplePoints", "SphereCrop", "TanhFeatures", "Transform", "affine_sample", "flip_sample", "in_range",
    "instantiate", "rotate_sample", "scale_sample", "translate_sample",
]
