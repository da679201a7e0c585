"""The flows on a Dask cluster started the way users start one: a `dask scheduler`
and two `dask worker` processes on loopback, in another folder (issue 17, item 6).

A worker puts its local directory first on sys.path, and that directory holds
dask's spill folder named ``storage``: these tests check that the flows run
anyway, that workers which cannot import the project make the flow fail at once
with the reason (instead of dying one by one while the flow waits), and that a
cluster that loses its workers is an error, not an endless wait.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from dask_processes import ROOT, dask_cluster
from pipelines import cluster
from storage import open_store
from storage.verify import verify_store

pytestmark = pytest.mark.slow


def cli(args: list[str], api_url: str | None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m pipelines ...`` from this checkout: a Prefect flow run reporting to ``api_url``,
    or (``None``) a plain run whose jobs go to the cluster without Prefect."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PYTHONPATH=str(ROOT), **({"PREFECT_API_URL": api_url} if api_url else {}))
    return subprocess.run([sys.executable, "-m", "pipelines", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_flows_run_on_user_started_workers(prefect_api, synthetic_world, tmp_path):
    store = tmp_path / "store"
    with dask_cluster(tmp_path / "elsewhere", n_workers=2) as c:
        r = cli(["ingest", "--dataset", "market1501", "--root", str(synthetic_world), "--store", str(store),
                 "--size", "128x64", "--unit-size", "8", "--units-per-task", "1", "--dask-address", c.address],
                None)  # a plain run: the jobs go to the workers without Prefect
        assert r.returncode == 0, r.stderr[-3000:]
        # the hazard is real: each worker's local directory (first on its sys.path) holds a `storage` folder
        assert list(c.local_dir.rglob("worker-*/storage")), list(c.local_dir.iterdir())
        r = cli(["build-dsap", "--store", str(store), "--estimator", "oracle", "--units-per-task", "1",
                 "--dask-address", c.address], prefect_api)  # a Prefect flow run: DaskTaskRunner
        assert r.returncode == 0, r.stderr[-3000:]
        assert c.workers_alive() == 2
    s = open_store(store)
    report = verify_store(s)
    assert report.ok, report.problems
    assert len(s.group("priors/dsap").units_done()) == len(s.units()) == report.checked_units // 3
    assert s.n_images == int((s.index["status"] == "ok").sum()) > 0


PRELOAD = '''"""Hide this project from a worker: what a worker without the package installed sees."""
import os, sys
ROOT = os.environ["HIDE_PROJECT_ROOT"]
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != ROOT]
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
for name in ("storage", "priors", "pipelines", "reid_train"):
    sys.modules.pop(name, None)
'''


def test_workers_without_the_project_fail_the_flow_at_once(synthetic_world, tmp_path):
    from pipelines.ingest import plan_ingest, write_image_units
    from storage import create_store

    index = plan_ingest("market1501", synthetic_world, progress=False)
    s = create_store(tmp_path / "store", dataset="market1501", index=index, image_size=(128, 64),
                     source_root=index.attrs["root"], unit_size=16)
    getattr(write_image_units, "fn", write_image_units)(s.url, index.attrs["root"], [0, 1, 2, 3])
    preload = tmp_path / "hide_project.py"
    preload.write_text(PRELOAD)
    env = {"HIDE_PROJECT_ROOT": str(ROOT)}
    with dask_cluster(tmp_path / "elsewhere", n_workers=2, env=env, preload=preload) as c:
        r = cli(["build-dsap", "--store", s.url, "--estimator", "oracle", "--dask-address", c.address], None)
        assert r.returncode != 0
        err = r.stderr + r.stdout
        assert "cannot run the jobs" in err and "storage found as the folder" in err and "dask-local" in err, err[-3000:]
        assert "install the project on every worker" in err
        assert c.workers_alive() == 2             # nothing was sent that could kill them
    assert not open_store(s.url).has_group("priors/dsap") or not open_store(s.url).group("priors/dsap").units_done()


def test_a_cluster_that_lost_its_workers_is_an_error(tmp_path):
    from distributed import Client

    with dask_cluster(tmp_path / "elsewhere", n_workers=2) as c, Client(c.address) as client:
        assert cluster.check_workers(client) == 2
        futures = [client.submit(time.sleep, 120, pure=False) for _ in range(2)]
        t0 = time.monotonic()
        while sum(len(v) for v in client.processing().values()) < 2 and time.monotonic() - t0 < 30:
            time.sleep(0.2)
        c.kill_workers()
        with pytest.raises(cluster.ClusterError, match="no worker for 2 s with 2 jobs unfinished"):
            list(cluster.as_completed(client, futures, grace_s=2, poll_s=0.2))


def test_no_workers_at_all_is_an_error(tmp_path):
    from distributed import Client

    with dask_cluster(tmp_path / "elsewhere", n_workers=1) as c, Client(c.address) as client:
        c.kill_workers()
        t0 = time.monotonic()
        while cluster.n_workers(client) and time.monotonic() - t0 < 30:
            time.sleep(0.2)
        with pytest.raises(cluster.ClusterError, match="no Dask worker joined"):
            cluster.check_workers(client, timeout_s=1)
