"""pc3d's exceptions: every error raised on bad input or bad configuration derives from Pc3dError."""
from __future__ import annotations

from os import PathLike


class Pc3dError(Exception):
    """Base class of every pc3d error."""


class DataFormatError(Pc3dError, ValueError):
    """A file or frame is malformed: truncated, wrong shape, NaN points, missing keys or files.

    The message always names the file (or frame) so a user can find it.
    """

    def __init__(self, path: str | PathLike | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class ConfigError(Pc3dError, ValueError):
    """A configuration value is missing, of the wrong type or inconsistent with another one."""


class SparseTensorError(Pc3dError, ValueError):
    """A sparse tensor or sparse layer got inconsistent input (dtype, rank, coordinates, channels)."""


class BackendUnavailableError(Pc3dError, RuntimeError):
    """A requested backend (spconv, open3d rendering, CUDA) is not installed or cannot run here."""


class CheckpointError(Pc3dError, RuntimeError):
    """A checkpoint is corrupted, truncated or was written by something other than pc3d."""


class TrainingError(Pc3dError, RuntimeError):
    """Training cannot go on (gradients non-finite step after step); the message says since when and what to try."""
