"""The hostile-input probe's cases (tools/probe_bad_input.py runs them), one module per area or data format.

Importing this package registers every case in core.CASES, module by module in the order of MODULES.
"""
import importlib

from .core import AREAS, CASES, OUTCOMES, PYTHON, ROOT, Case, Ctx, first_line

MODULES = ("loaders_kitti", "loaders_semantickitti", "loaders_waymo", "loaders_scannet", "loaders_sceneflow",
           "loaders_create_data", "inference", "checkpoints", "engine", "cli")
for _module in MODULES:
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["AREAS", "CASES", "OUTCOMES", "PYTHON", "ROOT", "Case", "Ctx", "first_line"]
