"""Test-wide settings. Small matmuls on 2 spinning OpenMP threads were measured 100x slower (docs/LOG.md)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The public reference data beside the repository; tests that need it skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA} (it lives in ../shared/data beside the repo)")
    return SHARED_DATA


@pytest.fixture
def local_hub(tmp_path, monkeypatch):
    """An in-memory Hub that huggingface_hub pushes to and downloads from during the test (helpers/hub.py)."""
    from helpers.hub import serve

    yield from serve(tmp_path, monkeypatch)


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory) -> Path:
    """The shared small pipeline (helpers/pipeline.py), built once per test session; read it, write elsewhere."""
    from helpers.pipeline import build_pipeline

    return build_pipeline(tmp_path_factory.mktemp("pipeline"))
