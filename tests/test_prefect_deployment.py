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


def test_readme_block_is_what_this_test_runs():
    block = readme_cycle()
    assert "export PREFECT_API_URL=http://127.0.0.1:4200/api" in block
    assert block.count("--watch") == 3 and "kill %2;" in block and "kill %1;" in block


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
        errors = [line for line in log.splitlines() if re.search(r"\bERROR\b|Traceback", line)]
        assert not errors, f"{name}: {errors[:5]}"
    assert "stopped!" in logs["prefect-worker.log"]            # the worker stopped on SIGTERM (the `wait` returned)
    assert (folder / "prefect.yaml").read_text() == (ROOT / "prefect.yaml").read_text(), "deploy rewrote prefect.yaml"
    s = open_store(folder / "demo" / "store")
    assert set(s.groups) == {"estimates/oracle", "priors/dsap", "priors/mpn"} and verify_store(s).ok
    assert s.image_size == (128, 64)
