"""Shared test fixtures: paths to the repo and to the real data in ../shared (present in CI)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO_ROOT / ".." / "shared" / "data").resolve()
NANOAOD_DIR = SHARED_DATA / "nanoaod"
LUMI_DIR = SHARED_DATA / "lumi"

# Keep torch and BLAS from oversubscribing the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        raise RuntimeError(f"real test data not found at {SHARED_DATA} (../shared must sit beside the repo)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def one_torch_thread():
    """The CI machine has 2 shared cores: one torch thread in the test process while a module runs (restored after).
    Modules that train torch models use it via ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
