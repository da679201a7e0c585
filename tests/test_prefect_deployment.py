"""The README's Prefect section, run as it is: server, process work pool, deploy, worker, three
deployment runs with --watch, verify, SIGTERM to the worker and the server.

The block between ``<!-- prefect-cycle`` and the end of its code fence is executed by bash in a
fresh folder that holds this project's packages and prefect.yaml (as "this folder" of the README),
with only the port changed to a free one. Nothing else is set up for it: PREFECT_API_URL, the
telemetry switch and everything else come from the README's own lines.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from storage import open_store
from storage.verify import verify_store

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def readme_cycle() -> str:
    text = (ROOT / "README.md").read_text()
    after = text.split("<!-- prefect-cycle", 1)[1]
    return after.split("```bash\n", 1)[1].split("```", 1)[0]


# Prefect's console format: "12:34:56.789 | ERROR   | logger.name - message"; a traceback follows its record.
_RECORD_START = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} \| ")
_HEARTBEAT_FAILED = re.compile(r"^\S+ \| ERROR +\| prefect\.server\.utilities\.worker_channel - "
                               r"Worker channel heartbeat persistence failed: ")
# the unindented lines of the traceback Prefect logs for the SQLite heartbeat race, in order (prefixes)
_SQLITE_RACE_TRACEBACK = (
    "Traceback (most recent call last):",
    "sqlite3.OperationalError: database is locked",
    "The above exception was the direct cause of the following exception:",
    "Traceback (most recent call last):",
    "sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) database is locked",
    "[SQL: INSERT INTO worker ",
    "[parameters: ",
    "(Background on this error at: ",
)


def log_records(log: str) -> list[list[str]]:
    """The log's lines grouped by record: a line with a time and level starts one, the lines after it (its
    traceback) belong to it; lines before the first record form one of their own."""
    records: list[list[str]] = [[]]
    for line in log.splitlines():
        if _RECORD_START.match(line):
            records.append([])
        records[-1].append(line)
    return [r for r in records if r]


def is_sqlite_heartbeat_race(record: list[str]) -> bool:
    """The one server error this test tolerates: a worker-channel heartbeat lost to SQLite's "database is locked".

    Prefect 3.8.8 (3.9.1 unchanged) writes each worker-channel heartbeat in a transaction that reads the work
    pool, then upserts the worker row (prefect/server/utilities/worker_channel.py:683-690 and 801-819,
    ``session_context(begin_transaction=True)`` without ``with_for_update=True``, so
    prefect/server/database/configurations.py:609 opens it with ``BEGIN DEFERRED``). On SQLite (WAL), when any
    other connection commits between that read and the write (a flow-run state, an event, a log), SQLite
    refuses the upgrade at once with "database is locked" (SQLITE_BUSY_SNAPSHOT; busy_timeout does not wait),
    the case Prefect's own comment at configurations.py:545-549 describes and its state-setting paths avoid
    with ``BEGIN IMMEDIATE``. The server logs it with ``logger.exception`` and closes the channel with
    HEARTBEAT_PERSISTENCE_FAILED, a retryable close (prefect/client/schemas/worker_channel.py:145-150): the
    worker falls back to REST, reconnects, and its hello records the heartbeat again. It shows with Prefect
    alone (a server, an idle worker, any API writer), more often on a loaded machine; nothing in the README's
    cycle can avoid it short of another database. Only that exact record passes: the same message with any
    other cause, or anything appended to it, is still an error.
    """
    head, *rest = record
    unindented = [line for line in rest if line.strip() and not line.startswith(" ")]
    return (bool(_HEARTBEAT_FAILED.match(head)) and len(unindented) == len(_SQLITE_RACE_TRACEBACK)
            and all(line.startswith(p) for line, p in zip(unindented, _SQLITE_RACE_TRACEBACK))
            and any(line.strip().endswith("in _receive_loop") for line in rest))


def error_lines(log: str, server: bool = False) -> list[str]:
    """The log's ERROR and Traceback lines; in the server's log, less the SQLite heartbeat race's records."""
    records = log_records(log)
    if server:
        records = [r for r in records if not is_sqlite_heartbeat_race(r)]
    return [line for r in records for line in r if re.search(r"\bERROR\b|Traceback", line)]


def test_readme_block_is_what_this_test_runs():
    block = readme_cycle()
    assert "export PREFECT_API_URL=http://127.0.0.1:4200/api" in block
    assert block.count("--watch") == 3 and "kill %2;" in block and "kill %1;" in block


# a record from a server log of this cycle (a loaded run), its frames shortened
_RACE_RECORD = """\
15:28:06.122 | ERROR   | prefect.server.utilities.worker_channel - Worker channel heartbeat persistence failed: \
work_pool=reid-priors worker_name=ProcessWorker 76e409de-d347-404d-864e-8e8d744fa6a0
Traceback (most recent call last):
  File ".../sqlalchemy/engine/base.py", line 1977, in _exec_single_context
    self.dialect.do_execute(
  File ".../aiosqlite/core.py", line 63, in _connection_worker_thread
    result = function()
             ^^^^^^^^^^
sqlite3.OperationalError: database is locked

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File ".../prefect/server/utilities/worker_channel.py", line 686, in _receive_loop
    pool_updated = await _persist_worker_channel_heartbeat(
                   ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File ".../prefect/server/models/workers.py", line 1035, in worker_heartbeat
    result = await session.execute(insert_stmt)
sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) database is locked
[SQL: INSERT INTO worker (work_pool_id, name, last_heartbeat_time, heartbeat_interval_seconds, status, id, created, \
updated) VALUES (:work_pool_id, :name, :last_heartbeat_time, :heartbeat_interval_seconds, :status, :id, :created, :updated)]
[parameters: {'work_pool_id': 'c5f97cf4-d38b-4b6a-846f-77e1948b8ae6', 'status': 'ONLINE'}]
(Background on this error at: https://sqlalche.me/e/21/e3q8)
"""
_INFO = "15:28:07.001 | INFO    | prefect.server.api.server - all well\n"


def test_only_the_sqlite_heartbeat_race_is_tolerated():
    assert error_lines(_INFO + _RACE_RECORD + _INFO, server=True) == []
    assert len(error_lines(_RACE_RECORD)) == 3                        # the worker's log and the output tolerate nothing
    other_cause = _RACE_RECORD.split("[SQL:")[0].replace(
        "sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) database is locked",
        "RuntimeError: Worker channel work pool no longer exists")
    assert len(error_lines(other_cause, server=True)) == 3
    other_logger = _RACE_RECORD.replace("utilities.worker_channel -", "api.workers -")
    assert len(error_lines(other_logger, server=True)) == 3
    glued = _RACE_RECORD + "Traceback (most recent call last):\n  File \"x.py\", line 1, in f\nValueError: boom\n"
    assert len(error_lines(glued, server=True)) == 4                  # something after it, with no record of its own
    later = _RACE_RECORD + "15:28:08.000 | ERROR   | uvicorn.error - Exception in ASGI application\n"
    assert error_lines(later, server=True) == ["15:28:08.000 | ERROR   | uvicorn.error - Exception in ASGI application"]


def test_readme_prefect_cycle_runs_verbatim(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    for package in ("pipelines", "priors", "storage", "reid_train"):
        (folder / package).symlink_to(ROOT / package)
    (folder / "prefect.yaml").write_text((ROOT / "prefect.yaml").read_text())
    script = folder / "cycle.sh"
    script.write_text(readme_cycle().replace("4200", str(_free_port())))
    # a fresh shell: no Prefect settings inherited from this process, the project's python first on PATH
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect_home"), "PYTHONPATH": str(ROOT),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}
    out = subprocess.run(["bash", "-e", str(script)], cwd=folder, env=env, capture_output=True, text=True,
                         timeout=1200)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert text.count("Flow run finished successfully in 'Completed'") == 3, text[-4000:]
    logs = {p.name: p.read_text() for p in folder.glob("prefect-*.log")}
    assert set(logs) == {"prefect-server.log", "prefect-worker.log"}
    for name, log in [("output", text), *logs.items()]:
        errors = error_lines(log, server=name == "prefect-server.log")
        assert not errors, f"{name}: {errors[:5]}"
    assert "stopped!" in logs["prefect-worker.log"]            # the worker stopped on SIGTERM (the `wait` returned)
    assert (folder / "prefect.yaml").read_text() == (ROOT / "prefect.yaml").read_text(), "deploy rewrote prefect.yaml"
    s = open_store(folder / "demo" / "store")
    assert set(s.groups) == {"estimates/oracle", "priors/dsap", "priors/mpn"} and verify_store(s).ok
    assert s.image_size == (128, 64)
