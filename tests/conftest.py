from __future__ import annotations

from pathlib import Path

import pytest
from support import FIXTURES, IRIS_DIR


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def iris_dir() -> Path:
    return IRIS_DIR
