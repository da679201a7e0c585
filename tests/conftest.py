"""Shared fixtures: real crops from ../shared/data, a Prefect test API for flow tests."""
from __future__ import annotations

import importlib.util
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
MINI_MARKET = SHARED_DATA / "mini_market1501"
CUHK03 = SHARED_DATA / "cuhk03_labeled_val"

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MPLBACKEND", "Agg")


@contextmanager
def bench_module(name: str) -> Iterator[ModuleType]:
    """``bench/<name>.py`` imported as a module, with bench/ on ``sys.path`` while it is used
    (the benches import each other by plain name)."""
    bench_dir = ROOT / "bench"
    sys.path.insert(0, str(bench_dir))
    try:
        spec = importlib.util.spec_from_file_location(name, bench_dir / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.path.remove(str(bench_dir))


def need_shared_data(path: Path = MINI_MARKET) -> Path:
    if not path.exists():
        pytest.skip(f"real crops not found at {path} (../shared/data is absent on this machine)")
    return path


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tests use small tensors: one intra-op thread is as fast, and far faster on shared cores.
    (Training runs set their own thread count from the config and restore it.)"""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """One temporary Prefect API for the tests of the Prefect path (local flow runs need none)."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect_home"))
    from prefect.testing.utilities import prefect_test_harness

    from prefect.settings import PREFECT_API_URL

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()  # subprocesses report here instead of starting servers of their own


@pytest.fixture(scope="session")
def synthetic_world(tmp_path_factory) -> Path:
    """A small synthetic world in the Market-1501 layout, with ground truth."""
    from priors.synthetic import write_dataset

    out = tmp_path_factory.mktemp("world") / "world"
    write_dataset(out, ids=10, images_per_id=6, cameras=3, seed=7, progress=False)
    return out


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory, synthetic_world) -> Path:
    """The synthetic world ingested at 128x64 with oracle DSAP (S=32) and MPN priors for a 128x64 input."""
    from pipelines.build_dsap import build_dsap_flow
    from pipelines.build_mpn import build_mpn_flow
    from pipelines.ingest import ingest_flow

    store = tmp_path_factory.mktemp("store") / "store"
    ingest_flow(dataset="market1501", root=str(synthetic_world), store=str(store), image_size="128x64", unit_size=8,
                progress=False)
    build_dsap_flow(store=str(store), estimator="oracle", dsap_size=32, progress=False)
    build_mpn_flow(store=str(store), parsing="oracle", segmentation="oracle", input_size="128x64", progress=False)
    return store
