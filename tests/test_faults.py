"""Kill every command at every write point; the same command again must end byte-identical (issue 15).

Each test counts the write points of an uninterrupted run, then for every N stops a fresh copy at
point N and re-runs the command (see ``tests/fault_harness.py``). Most kills are in-process
(:class:`storage.fs.InjectedFault`); two per command are a real process exiting at the point
(``os._exit``: the first point, which leaves a stale lock file, and one half-way through), so a dead
process's leftovers are covered too (each subprocess pays ~5 s of imports on the 2-core CI box).
bench/bench_faults.py runs the same loops on a bigger store, all of them in subprocesses if asked.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import fault_harness as h  # noqa: E402

SUBPROCESS_AT = (0.0, 0.5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, monkeypatch_module):
    from priors.synthetic import write_dataset

    work = tmp_path_factory.mktemp("faults")
    world = work / "world"
    write_dataset(world, ids=3, images_per_id=4, cameras=2, seed=3, size=(64, 32), progress=False)
    store = work / "store"
    h.ingest(world, store)
    return world, store, work


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    mp.setenv("SOURCE_DATE_EPOCH", "1700000000")
    yield mp
    mp.undo()


def _check(res: dict, at_least: int) -> None:
    assert res["points"] >= at_least, res
    assert res["bad"] == [], res["bad"][:5]
    assert res["covered"] == res["points"]


def test_ingest_killed_at_every_write_point_resumes_byte_identical(tiny):
    world, _, work = tiny
    res = h.kill_loop("ingest", world, None, work / "ingest", subprocess_at=SUBPROCESS_AT)
    _check(res, 20)
    assert res["subprocess_kills"] == 2


@pytest.mark.parametrize("command", ["build-dsap", "build-mpn"])
def test_build_killed_at_every_write_point_resumes_byte_identical(tiny, command):
    world, store, work = tiny
    res = h.kill_loop(command, world, store, work / command, subprocess_at=SUBPROCESS_AT)
    _check(res, 30)


def test_fit_killed_at_every_checkpoint_write_resumes_bit_identical(tiny):
    _, store, work = tiny
    res = h.fit_kill_loop(store, work / "fit")
    _check(res, 4)
    shutil.rmtree(work / "fit")
