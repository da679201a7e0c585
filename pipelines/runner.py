"""Where a flow's jobs run, and what a build flow returns or refuses.

Every flow is the same shape: a driver opens the store, creates (or resumes)
the groups it writes, then runs one *job* per batch of write units
(:mod:`pipelines.jobs`: a :func:`~pipelines.jobs.unit_job` function whose last
argument is its list of unit numbers, retried, its persistent error recorded
for the batch while the other batches go on).

Where the jobs run (:func:`run_tasks`):

* **locally** (``python -m pipelines ...``, a notebook, a test: no Prefect flow
  run is active): in a pool of ``workers`` processes on this machine, one unit
  per job, without Prefect (no server, no database: a no-op re-run takes as
  long as opening the store);
* **in a Prefect flow run** (a deployment run by a worker, or the CLI with
  ``PREFECT_API_URL`` set, see :mod:`pipelines.flows`): as Prefect task runs of
  ``units_per_task`` units on the flow's thread pool, or a process pool when
  ``workers`` > 1;
* **on Dask** (``dask_address``: an existing scheduler, ``dask_workers``: a
  ``LocalCluster``): a distributed ``Client`` locally, a ``DaskTaskRunner`` in a
  Prefect run (:mod:`pipelines.scale_out`; :mod:`pipelines.cluster` checks the
  workers and says how to start them).

Units never overlap between jobs, so processes never write the same unit. The
progress bar counts units as they finish (in completion order); in a local run
its rate and ETA come from how long the units took in their processes, leaving
out each process's first unit, which also pays its start-up (imports, model
set-up) that the remaining units do not (:class:`pipelines.progress.UnitBar`).

A build flow ends with :func:`finish` (its summary) and, before it writes,
:func:`refuse_other_settings` (resume only with the settings a group was made with).
"""
from __future__ import annotations

import importlib
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Iterable

from pipelines.jobs import call_with_retries
from pipelines.progress import UnitBar, advance
from pipelines.scale_out import run_dask, run_prefect


# --- where jobs run -------------------------------------------------------------------------------------------------

def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers(device: str | None = None) -> int:
    """Processes a local run uses when ``--workers`` is not given: the usable
    cores, but one on a CUDA device (one model per GPU)."""
    return 1 if device and str(device).startswith("cuda") else usable_cores()


def _call_by_name(module: str, name: str, args: tuple) -> dict[str, Any]:
    """What a worker process runs: the job looked up by name (no pickled code)."""
    return call_with_retries(getattr(importlib.import_module(module), name), args)


def _timed_call_by_name(module: str, name: str, args: tuple) -> tuple[dict[str, Any], float, int]:
    """:func:`_call_by_name` and how long it took in this worker process, with the process id."""
    start = time.perf_counter()
    result = _call_by_name(module, name, args)
    return result, time.perf_counter() - start, os.getpid()


def in_prefect_run() -> bool:
    """True inside a Prefect flow run (a deployment, or the CLI with PREFECT_API_URL)."""
    if "prefect" not in sys.modules:
        return False
    from prefect.context import FlowRunContext

    return FlowRunContext.get() is not None


def _init_worker(threads: int) -> None:
    """Each pool process gets its share of the cores for numpy/torch/OpenCV."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    if "torch" in sys.modules:  # pragma: no cover - only when a parent imported torch before spawning
        sys.modules["torch"].set_num_threads(threads)


def run_tasks(job: Callable, calls: list[tuple], desc: str, progress: bool = True,
              dask_address: str | None = None, dask_workers: int = 0, workers: int = 0,
              device: str | None = None) -> list[dict[str, Any]]:
    """Run ``job(*args)`` for each ``args`` in ``calls`` (the last argument of each
    is its list of units) and return the results in the order of ``calls``.

    ``workers``: processes (local run: 0 is :func:`default_workers` of ``device``,
    1 runs in this process; Prefect run: 0 or 1 is the flow's thread pool, more a
    process pool). See the module docstring for Prefect and Dask runs."""
    if not calls:
        return []
    total = sum(len(c[-1]) for c in calls)
    local = not in_prefect_run() and not (dask_address or dask_workers)
    processes = max(1, min(int(workers or default_workers(device)), total)) if local else 1
    bar = UnitBar(total=total, desc=desc, unit="unit", disable=not progress, dynamic_ncols=True, smoothing=0.1,
                  processes=processes)
    try:
        if in_prefect_run():
            return run_prefect(job, calls, desc, bar, dask_address, dask_workers, workers)
        # locally, one unit per job: the bar advances per unit and processes stay busy to the end
        calls = [(*c[:-1], [u]) for c in calls for u in c[-1]]
        if dask_address or dask_workers:
            return run_dask(job, calls, bar, desc, dask_address, dask_workers)
        return _run_local(job, calls, bar, desc, processes)
    finally:
        bar.close()


def _run_serial(job: Callable, calls: list[tuple], bar, desc: str) -> list[dict[str, Any]]:
    results = []
    for args in calls:
        start = time.perf_counter()
        res = call_with_retries(job, args)
        results.append(advance(bar, res, args[-1], desc, time.perf_counter() - start, "this process"))
    return results


def _run_local(job: Callable, calls: list[tuple], bar, desc: str, workers: int) -> list[dict[str, Any]]:
    workers = max(1, min(int(workers), len(calls)))
    if workers == 1:
        return _run_serial(job, calls, bar, desc)
    results: list[dict[str, Any] | None] = [None] * len(calls)
    threads = max(1, usable_cores() // workers)
    # spawn: estimator libraries (torch, mediapipe, OpenCV) do not survive a fork of a threaded parent
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(threads,)) as pool:
        futures = {pool.submit(_timed_call_by_name, job.__module__, job.__name__, args): i
                   for i, args in enumerate(calls)}
        for fut in as_completed(futures):
            i = futures[fut]
            seconds = process = None
            try:
                res, seconds, process = fut.result()
            except Exception as exc:  # noqa: BLE001 - a worker process died (killed, out of memory)
                res = {"error": f"{type(exc).__name__}: {exc}", "units": list(calls[i][-1])}
            results[i] = advance(bar, res, calls[i][-1], desc, seconds, process)
    return results  # type: ignore[return-value]


# --- results --------------------------------------------------------------------------------------------------------

def summarize_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over the job results of one flow run (extra integer counters are summed too)."""
    out: dict[str, Any] = {"units_written": 0, "units_skipped": 0, "images": 0, "failures": {}, "batch_errors": []}
    renamed = {"written": "units_written", "skipped": "units_skipped"}
    for r in results:
        if "error" in r:
            out["batch_errors"].append(r["error"])
            continue
        for key, value in r.items():
            if key == "failures":
                for reason, n in value.items():
                    out["failures"][reason] = out["failures"].get(reason, 0) + n
            elif isinstance(value, int):
                key = renamed.get(key, key)
                out[key] = out.get(key, 0) + value
    return out


def finish(flow_name: str, results: list[dict[str, Any]], already_done: int = 0, **fields: Any) -> dict[str, Any]:
    """The summary a build flow returns, printed as one line (``already_done``:
    units complete before this run, counted as skipped)."""
    summary = {**fields, **summarize_results(results)}
    summary["units_skipped"] += int(already_done)
    extra = "".join(f", {k} {v}" for k, v in summary.items()
                    if k not in ("units_written", "units_skipped", "images") and isinstance(v, int))
    print(f"{flow_name}: {summary['units_written']} units written, {summary['units_skipped']} already done, "
          f"{summary['images']} images{extra}, failures {summary['failures']}, "
          f"batch errors {len(summary['batch_errors'])}")
    return summary


def count_reasons(reasons: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in reasons:
        out[r] = out.get(r, 0) + 1
    return out


def refuse_other_settings(store, group: str, provenance: dict[str, Any], flags: dict[str, str],
                          overwrite: bool) -> None:
    """Refuse, in one line naming the setting and its flag, to resume ``group``
    when it exists with other settings (``flags``: provenance param -> flag);
    other differences are left to :func:`storage.group_writer`'s refusal."""
    if overwrite or not store.has_group(group):
        return
    old = store.groups[group]
    names = lambda prov: [p.get("name") for p in (prov if isinstance(prov, list) else [prov]) if isinstance(p, dict)]
    what = changed_setting(old.get("params") or {}, provenance.get("params") or {}, flags)
    if what is None and names(old.get("producer")) != names(provenance.get("producer")):
        what = f"made by {names(old.get('producer'))}, now {names(provenance.get('producer'))}"
    if what:
        from storage import StoreError

        raise StoreError(f"{store.url} already has {group} with other settings: {what}; "
                         f"keep the old value, pass --overwrite to rebuild it, or use another --store")


def changed_setting(old: dict[str, Any], new: dict[str, Any], flags: dict[str, str]) -> str | None:
    """The first setting that differs between two provenance ``params`` dicts,
    as "NAME was OLD, now NEW (FLAG)", or None when none of ``flags`` differs."""
    for name, flag in flags.items():
        if name in old and old.get(name) != new.get(name):
            return f"{name} was {old.get(name)!r}, now {new.get(name)!r} ({flag})"
    return None
