"""Indoor 3D detection hook (ScanNet): AP at IoU 0.25 and 0.5 per class over axis-aligned boxes and their mean
over the classes present (pc3d.eval.indoor), in percent. Ground truth: ``dataset.annotations(i)``
({"gt_boxes", "gt_labels"}, ScanNetDataset reads them from create_data's infos), else the raw sample
``dataset.load(i)``; class names: the dataset's ``box_class_names``."""
from __future__ import annotations

from collections.abc import Sequence

from pc3d.eval.indoor import indoor_map


class IndoorDetectionEvaluator:
    def __init__(self, class_names: Sequence[str] | None = None, thresholds: Sequence[float] = (0.25, 0.5)):
        self.class_names, self.thresholds = class_names, tuple(thresholds)

    def __call__(self, dataset, predictions: list[dict]) -> dict:
        read = getattr(dataset, "annotations", None) or dataset.load
        truths = [read(i) for i in range(len(predictions))]
        names = list(self.class_names or dataset.box_class_names)
        return indoor_map(predictions, truths, names, self.thresholds)
