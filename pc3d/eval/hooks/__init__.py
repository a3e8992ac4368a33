"""Evaluation hooks: ``hook(dataset, predictions) -> flat metrics dict``, one per task and benchmark.

A dataset config names its hook (``dataset.evaluator._target_``); the engine calls it with the
predictions of the whole split in dataset index order (the schemas of ``pc3d.models.contract``).
A hook with a ``last_table`` string (the benchmark's own table) gets it printed by ``tools/test.py``
and written to ``metrics.md``. Hooks read ground truth through the dataset without re-reading point
clouds where the dataset allows it (``dataset.annotations(i)``), and compute metrics with the pure
functions and accumulators of ``pc3d.eval``.
"""
from .classification import ClassificationEvaluator
from .energy import EnergyReport
from .flow import FlowEvaluator
from .indoor import IndoorDetectionEvaluator
from .kitti import KittiEvaluator
from .mos import MosEvaluator
from .segmentation import SegmentationEvaluator
from .waymo import WaymoEvaluator

__all__ = ["ClassificationEvaluator", "EnergyReport", "FlowEvaluator", "IndoorDetectionEvaluator", "KittiEvaluator",
           "MosEvaluator", "SegmentationEvaluator", "WaymoEvaluator"]
