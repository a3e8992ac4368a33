"""Shared fixtures: paths to the real samples beside the checkout, seeded generators."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "samples"


def sample_path(relative: str) -> Path:
    """Path of a real sample under ../shared/samples, or skip the test with the reason."""
    path = SAMPLES / relative
    if not path.exists():
        pytest.skip(f"real sample {path} is absent (it lives in ../shared/samples beside the checkout)")
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: end-to-end tests that train or run long")
