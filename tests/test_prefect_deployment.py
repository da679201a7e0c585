"""The whole Prefect cycle on loopback: server, process work pool, deploy, run, worker.

This is what a user does (README): the deployments of prefect.yaml run the
synthetic world's ingest, build-dsap and build-mpn-priors against a real
Prefect server with its own SQLite database.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from storage import open_store
from storage.verify import verify_store

ROOT = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect_server_home")
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}
    log = open(home / "server.log", "wb")
    proc = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"prefect server did not start: {(home / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _prefect(env, *args, timeout=300) -> str:
    out = subprocess.run([PREFECT, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"prefect {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


def _run_deployment(env, name: str, **params) -> str:
    args = ["deployment", "run", name]
    for k, v in params.items():
        args += ["--param", f"{k}={v}"]
    out = _prefect(env, *args)
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", out).group(1)
    _prefect(env, "worker", "start", "--pool", "reid-priors", "--run-once", timeout=600)
    state = _prefect(env, "flow-run", "inspect", run_id)
    assert "COMPLETED" in state, state[-3000:]
    return run_id


def test_deployments_run_on_a_real_server(prefect_server, synthetic_world, tmp_path):
    env = prefect_server
    before = (ROOT / "prefect.yaml").read_text()
    _prefect(env, "work-pool", "create", "reid-priors", "--type", "process")
    out = _prefect(env, "--no-prompt", "deploy", "--all")
    for name in ("ingest-dataset/demo", "build-dsap/demo", "build-mpn-priors/demo", "build-dsap/densepose"):
        assert name in out
    assert (ROOT / "prefect.yaml").read_text() == before, "deploy must not rewrite prefect.yaml"
    store = tmp_path / "store"
    _run_deployment(env, "ingest-dataset/demo", root=synthetic_world, store=store, size="128x64")
    _run_deployment(env, "build-dsap/demo", store=store)
    _run_deployment(env, "build-mpn-priors/demo", store=store, input_size="128x64")
    s = open_store(store)
    assert set(s.groups) == {"estimates/oracle", "priors/dsap", "priors/mpn"}
    assert verify_store(s).ok
