"""Semi-supervised segmentation (Less is More): mean-teacher pseudo labels with a reflectivity prior and
class-and-range-balanced thresholds."""
from pc3d.models.semi.mean_teacher import MeanTeacherSegmentor
from pc3d.models.semi.pseudo_labels import (
    IGNORE,
    ReflectivityPrior,
    adjust,
    class_range_thresholds,
    ema_update,
    pseudo_targets,
    range_band,
)

__all__ = ["IGNORE", "MeanTeacherSegmentor", "ReflectivityPrior", "adjust", "class_range_thresholds", "ema_update",
           "pseudo_targets", "range_band"]
