"""Metrics as pure functions of arrays, on CPU: KITTI AP (R11 / R40), Waymo AP / APH,
segmentation mIoU, MOS IoU, scene-flow EPE / accuracy and classification accuracy.
"""
