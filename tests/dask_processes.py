"""Real ``dask scheduler`` / ``dask worker`` processes on loopback, started from
another folder the way a user starts them (helper of the cluster tests)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]


def dask_command(what: str) -> list[str]:
    """``dask scheduler`` / ``dask worker`` of this Python's environment."""
    script = Path(sys.executable).with_name("dask")
    return [str(script), what] if script.exists() else [sys.executable, "-m", f"distributed.cli.dask_{what}"]


def worker_env(folder: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a worker started in ``folder``: no PYTHONPATH when this
    checkout is what the environment's install imports from there (``make
    install``), else this checkout as a real ``sys.path`` entry (what the
    Makefile's compat-mode editable install adds; a developer whose venv was
    installed from another checkout)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(extra or {})
    found = subprocess.run([sys.executable, "-c", "import storage; print(storage.__file__)"], cwd=folder, env=env,
                           capture_output=True, text=True, timeout=60).stdout.strip()
    if not found or Path(found).resolve() != ROOT / "storage" / "__init__.py":
        env["PYTHONPATH"] = str(ROOT)
    return env


class Cluster:
    def __init__(self, address: str, scheduler: subprocess.Popen, workers: list[subprocess.Popen], local_dir: Path):
        self.address, self.scheduler, self.workers, self.local_dir = address, scheduler, workers, local_dir

    def kill_workers(self) -> None:
        for p in self.workers:
            _stop(p, signal.SIGKILL)

    def workers_alive(self) -> int:
        return sum(p.poll() is None for p in self.workers)


def _stop(p: subprocess.Popen, sig=signal.SIGTERM) -> None:
    if p.poll() is None:
        try:
            os.killpg(p.pid, sig)  # the worker's nanny and its worker process
        except ProcessLookupError:
            pass
    try:
        p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=20)


@contextmanager
def dask_cluster(folder: Path, n_workers: int = 2, env: dict[str, str] | None = None,
                 preload: Path | None = None, timeout_s: float = 90) -> Iterator[Cluster]:
    """A scheduler on 127.0.0.1 (random port) and ``n_workers`` single-thread
    workers, all started in ``folder``; every process is stopped on exit."""
    folder.mkdir(parents=True, exist_ok=True)
    env = worker_env(folder, env)
    sched_file = folder / "scheduler.json"
    local_dir = folder / "dask-local"
    logs = [open(folder / f"{name}.log", "w") for name in ["scheduler", *[f"worker{i}" for i in range(n_workers)]]]
    start = dict(cwd=folder, env=env, start_new_session=True, stderr=subprocess.STDOUT)
    scheduler = subprocess.Popen([*dask_command("scheduler"), "--host", "127.0.0.1", "--port", "0",
                                  "--no-dashboard", "--scheduler-file", str(sched_file)], stdout=logs[0], **start)
    workers: list[subprocess.Popen] = []
    try:
        deadline = time.monotonic() + timeout_s
        while not sched_file.exists():
            if scheduler.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dask scheduler did not start: {(folder / 'scheduler.log').read_text()[-2000:]}")
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        extra = ["--preload", str(preload)] if preload else []
        for i in range(n_workers):
            workers.append(subprocess.Popen(
                [*dask_command("worker"), address, "--nthreads", "1", "--no-dashboard", "--name", f"w{i}",
                 "--local-directory", str(local_dir), *extra], stdout=logs[i + 1], **start))
        from distributed import Client

        with Client(address, timeout=timeout_s) as client:
            client.wait_for_workers(n_workers, timeout=timeout_s)
        yield Cluster(address, scheduler, workers, local_dir)
    finally:
        for p in [*workers, scheduler]:
            _stop(p)
        for f in logs:
            f.close()
