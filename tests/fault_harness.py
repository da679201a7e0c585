"""Kill-at-every-write-point loops (used by tests/test_faults.py and bench/bench_faults.py).

A *write point* is counted by :data:`storage.fs.faults` at both sides of every file write
(temporary file written / renamed) and after every deletion, in the store's fs layer, in the
zarr store it hands out and in ``reid_train.checkpoint.save_checkpoint``. :func:`kill_loop`
runs a command once to count its points, then for every N: a fresh copy of the starting state,
the command stopped at point N (in-process: :class:`storage.fs.InjectedFault`; with
``subprocess=True`` the real process exits there), the same command again, and compares the
result with the uninterrupted run.

The flows run as plain functions with ``workers=1`` (every unit in this process, no Prefect): the
write path is the same code, and a loop over all N stays affordable.
"""
from __future__ import annotations

import gc
import hashlib
import os
import shutil
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Callable

from storage.fs import FAULT_ENV, FAULT_EXIT_CODE, InjectedFault, faults

ROOT = Path(__file__).resolve().parents[1]


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


# ---- the commands (small settings) ---------------------------------------------------------
UNIT_SIZE = int(os.environ.get("REID_PRIORS_FAULT_UNIT", "8"))


def ingest(world: Path, store: Path) -> None:
    from pipelines.ingest import ingest_flow

    ingest_flow(dataset="market1501", root=str(world), store=str(store), image_size="64x32", unit_size=UNIT_SIZE,
                units_per_task=2, workers=1, progress=False)


def build_dsap(world: Path, store: Path) -> None:
    from pipelines.build_dsap import build_dsap_flow

    build_dsap_flow(store=str(store), estimator="oracle", dsap_size=8, units_per_task=2, workers=1, progress=False)


def build_mpn(world: Path, store: Path) -> None:
    from pipelines.build_mpn import build_mpn_flow

    build_mpn_flow(store=str(store), parsing="oracle", segmentation="oracle", input_size="64x32",
                   units_per_task=2, workers=1, progress=False)


COMMANDS: dict[str, Callable[[Path, Path], None]] = {"ingest": ingest, "build-dsap": build_dsap, "build-mpn": build_mpn}


def fit_cfg(store: Path, **kw):
    from reid_train.methods import get_method

    base = dict(store=str(store), backbone="resnet18", size=(64, 32), P=2, K=2, epochs=1, max_steps=4,
                lr=1e-3, log_every=1, threads=1, device="cpu", workers=0, checkpoint_every=1,
                eval_every=0, eval_batch_size=16)
    base.update(kw)
    return get_method("baseline").Config(**base)


def fit(store: Path, out: Path, resume: bool):
    from reid_train.engine import train

    return train(fit_cfg(store), out, resume=resume)


def _forget(exc: BaseException) -> None:
    """Drop the killed run's frames (zarr's event loop may keep the exception): its objects, like the
    writer locks its Store holds, must go as they would with the process."""
    traceback.clear_frames(exc.__traceback__)
    exc.__traceback__ = None
    gc.collect()


# ---- the loops -------------------------------------------------------------------------------
def _run_killed_subprocess(name: str, world: Path, store: Path, n: int) -> int:
    env = {**os.environ, FAULT_ENV: str(n), "PYTHONPATH": str(ROOT), "REID_PRIORS_FAULT_UNIT": str(UNIT_SIZE)}
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); import fault_harness as h\n"
            f"from pathlib import Path\nh.COMMANDS[{name!r}](Path({str(world)!r}), Path({str(store)!r}))")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True).returncode


def kill_loop(name: str, world: Path, start: Path | None, work: Path, subprocess_every: int = 0,
              points: list[int] | None = None, subprocess_at: tuple[float, ...] = ()) -> dict:
    """Kill ``COMMANDS[name]`` at every write point (or ``points``); returns counts and failures.

    ``start``: the store the command starts from (copied per run; None = no store yet).
    ``subprocess_every``: every k-th point is killed in a real subprocess instead (os._exit);
    ``subprocess_at``: also these fractions of the way through (0.0 = the first point).
    """
    from storage import open_store
    from storage.verify import verify_store

    command = COMMANDS[name]
    work.mkdir(parents=True, exist_ok=True)

    def fresh(dst: Path) -> Path:
        if dst.exists():
            shutil.rmtree(dst)
        if start is not None:
            shutil.copytree(start, dst)
        return dst

    ref = fresh(work / f"{name}-ref")
    faults.arm(None)
    command(world, ref)
    total = faults.count
    want = tree_digest(ref)
    out = {"command": name, "points": total, "covered": 0, "bad": [], "subprocess_kills": 0}
    in_subprocess = {min(total, 1 + int(f * total)) for f in subprocess_at}
    for n in points or range(1, total + 1):
        dst = fresh(work / f"{name}-{n}")
        if (subprocess_every and n % subprocess_every == 0) or n in in_subprocess:
            rc = _run_killed_subprocess(name, world, dst, n)
            out["subprocess_kills"] += 1
            if rc != FAULT_EXIT_CODE:
                out["bad"].append(f"point {n}: subprocess exited {rc}, not at the fault")
                continue
        else:
            if not _killed_at(n, lambda: command(world, dst)):
                out["bad"].append(f"point {n}: no fault fired")
                continue
            gc.collect()  # the killed run's objects are gone, as with a dead process
        command(world, dst)  # the same command again
        rep = verify_store(open_store(dst))
        got = tree_digest(dst)
        if not rep.ok:
            out["bad"].append(f"point {n}: verify: {rep.problems[:2]}")
        elif got != want:
            diff = sorted(set(got.items()) ^ set(want.items()))
            out["bad"].append(f"point {n}: store differs from the uninterrupted run: {diff[:3]}")
        else:
            out["covered"] += 1
        shutil.rmtree(dst)
    return out


def _killed_at(n: int, command) -> bool:
    """Run ``command`` (flows serially) with the in-process fault armed at write point ``n``;
    True when the fault fired (the run died there), False when the command finished."""
    faults.arm(n)
    try:
        command()
    except InjectedFault as exc:
        _forget(exc)
        return True
    finally:
        faults.arm(None)
    return False


def fit_kill_loop(store: Path, work: Path) -> dict:
    """Kill a short fit at every checkpoint write point; resume (or restart) and compare the weights."""
    import torch

    faults.arm(None)
    ref = fit(store, work / "fit-ref", resume=False)
    total = faults.count
    want = {k: v.clone() for k, v in ref.method.state_dict().items()}
    out = {"command": "fit", "points": total, "covered": 0, "bad": []}
    for n in range(1, total + 1):
        run = work / f"fit-{n}"
        shutil.rmtree(run, ignore_errors=True)
        if not _killed_at(n, lambda: fit(store, run, resume=False)):
            out["bad"].append(f"point {n}: no fault fired")
            continue
        res = fit(store, run, resume=(run / "checkpoint.pt").is_file())
        got = res.method.state_dict()
        if all(torch.equal(got[k], want[k]) for k in want) and res.step == ref.step:
            out["covered"] += 1
        else:
            out["bad"].append(f"point {n}: weights differ from the uninterrupted run")
        shutil.rmtree(run)
    return out
