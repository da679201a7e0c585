"""Shared fixtures: real crops from ../shared/data, a Prefect test API for flow tests."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
MINI_MARKET = SHARED_DATA / "mini_market1501"
CUHK03 = SHARED_DATA / "cuhk03_labeled_val"

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MPLBACKEND", "Agg")


def need_shared_data(path: Path = MINI_MARKET) -> Path:
    if not path.exists():
        pytest.skip(f"real crops not found at {path} (../shared/data is absent on this machine)")
    return path


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """One temporary Prefect API for every flow test of the session."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect_home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
