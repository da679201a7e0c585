"""The flow machinery shared by ingest, build-dsap and build-mpn-priors.

Every flow is the same shape: a driver opens the store, creates (or resumes)
the groups it writes, then runs one *job* per batch of write units (a job
function decorated with :func:`unit_job`; its last argument is its list of
unit numbers). A job reopens the store in its own process, skips units already
marked complete, computes the rest and writes them unit by unit. Failures of
single images are data (failure rows), not exceptions; an exception in a job
is retried and, if it persists, recorded for the whole batch while the other
batches go on.

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
  Prefect run. The workers are checked before any job is sent, and a cluster
  that has lost all its workers fails the run (:mod:`pipelines.cluster`, which
  also says how to start workers and what they need).

Units never overlap between jobs, so processes never write the same unit. The
progress bar counts units as they finish (in completion order); in a local run
its rate and ETA come from how long the units took in their processes, leaving
out each process's first unit, which also pays its start-up (imports, model
set-up) that the remaining units do not (:class:`UnitBar`).
"""
from __future__ import annotations

import functools
import importlib
import logging
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

from tqdm.auto import tqdm

log = logging.getLogger("pipelines")


# --- jobs -----------------------------------------------------------------------------------------------------------

def unit_job(retries: int = 2, retry_delay_seconds: float = 2.0) -> Callable[[Callable], Callable]:
    """Mark a module-level function as a flow's job (retried ``retries`` times).

    The function stays a plain function (picklable by reference for process
    pools); inside a Prefect flow run it is wrapped into a Prefect task with the
    same retry settings (:func:`prefect_task`)."""

    def mark(fn: Callable) -> Callable:
        fn.retries = int(retries)  # type: ignore[attr-defined]
        fn.retry_delay_seconds = float(retry_delay_seconds)  # type: ignore[attr-defined]
        return fn

    return mark


@functools.lru_cache(maxsize=None)
def prefect_task(fn: Callable):
    """The Prefect task of a :func:`unit_job` function (created once)."""
    from prefect import task

    return task(fn, name=fn.__name__, retries=getattr(fn, "retries", 0),
                retry_delay_seconds=getattr(fn, "retry_delay_seconds", 0))


def call_with_retries(fn: Callable, args: tuple) -> dict[str, Any]:
    """Run one job, retrying like the Prefect task would; a persistent error becomes the result."""
    retries, delay = getattr(fn, "retries", 0), getattr(fn, "retry_delay_seconds", 0.0)
    for attempt in range(retries + 1):
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - retried, then recorded; the other jobs go on
            if attempt == retries:
                return {"error": f"{type(exc).__name__}: {exc}", "units": list(args[-1])}
            log.warning("%s units %s failed (%s: %s); retry %d/%d in %.0f s", fn.__name__, args[-1],
                        type(exc).__name__, exc, attempt + 1, retries, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def _call_by_name(module: str, name: str, args: tuple) -> dict[str, Any]:
    """What a worker process runs: the job looked up by name (no pickled code)."""
    return call_with_retries(getattr(importlib.import_module(module), name), args)


def batches(units: Iterable[int], per_task: int) -> list[list[int]]:
    """Consecutive unit numbers grouped ``per_task`` at a time."""
    units = list(units)
    per_task = max(1, int(per_task))
    return [units[i:i + per_task] for i in range(0, len(units), per_task)]


# --- where jobs run -------------------------------------------------------------------------------------------------

def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers(device: str | None = None) -> int:
    """Processes a local run uses when ``--workers`` is not given: the usable
    cores, but one on a CUDA device (one model per GPU)."""
    return 1 if device and str(device).startswith("cuda") else usable_cores()


class UnitBar(tqdm):
    """A tqdm bar over units whose rate (hence ETA) is ``processes / mean seconds per unit``.

    :meth:`record` takes how long a job took *in its process* and which process ran it; the first job
    of each process is left out of the mean (it carries that process's start-up). Until a second job
    of some process has finished, the bar shows tqdm's own rate; with fewer units left than processes,
    only that many run in parallel. Left out, the start-up of a spawned pool made the estimate at a
    quarter of a 12-unit run 2.25x the truth (BENCHMARKS.md, issue 16)."""

    def __init__(self, *args: Any, processes: int = 1, **kwargs: Any) -> None:
        self.processes = max(1, int(processes))
        self._started: set = set()
        self.steady_units, self.steady_seconds = 0, 0.0
        super().__init__(*args, **kwargs)

    def record(self, units: int, seconds: float | None = None, process: Any = None) -> None:
        """``units`` finished in one job of ``seconds`` (None: not timed) run by ``process``."""
        if seconds is not None and units > 0:
            if process in self._started:
                self.steady_units += units
                self.steady_seconds += float(seconds)
            self._started.add(process)
        self.update(units)

    @property
    def format_dict(self):
        d = super().format_dict
        if self.steady_units:
            left = max((self.total or 0) - self.n, 1)
            d["rate"] = min(self.processes, left) * self.steady_units / max(self.steady_seconds, 1e-9)
        return d


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
            return _run_prefect(job, calls, desc, bar, dask_address, dask_workers, workers)
        # locally, one unit per job: the bar advances per unit and processes stay busy to the end
        calls = [(*c[:-1], [u]) for c in calls for u in c[-1]]
        if dask_address or dask_workers:
            return _run_dask(job, calls, bar, desc, dask_address, dask_workers)
        return _run_local(job, calls, bar, desc, processes)
    finally:
        bar.close()


def _advance(bar, result: dict[str, Any], units: list[int], desc: str, seconds: float | None = None,
             process: Any = None) -> dict[str, Any]:
    if "error" in result:
        log.error("%s: units %s failed after their retries: %s", desc, units, result["error"])
    if isinstance(bar, UnitBar):
        bar.record(len(units), seconds, process)
    else:
        bar.update(len(units))
    return result


def _run_serial(job: Callable, calls: list[tuple], bar, desc: str) -> list[dict[str, Any]]:
    results = []
    for args in calls:
        start = time.perf_counter()
        res = call_with_retries(job, args)
        results.append(_advance(bar, res, args[-1], desc, time.perf_counter() - start, "this process"))
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
            results[i] = _advance(bar, res, calls[i][-1], desc, seconds, process)
    return results  # type: ignore[return-value]


def _run_dask(job: Callable, calls: list[tuple], bar, desc: str, dask_address: str | None, dask_workers: int
              ) -> list[dict[str, Any]]:
    from distributed import Client, LocalCluster

    from .cluster import as_completed as cluster_completed
    from .cluster import check_workers

    if dask_address:
        client, cluster = Client(dask_address), None
    else:
        cluster = LocalCluster(n_workers=int(dask_workers), threads_per_worker=1, processes=True,
                               dashboard_address=":0", silence_logs=logging.WARNING,
                               env={"OMP_NUM_THREADS": "1"})
        client = Client(cluster)
    try:
        check_workers(client)  # before a job that cannot be unpickled kills the worker receiving it
        futures = [client.submit(call_with_retries, job, args, pure=False) for args in calls]
        index = {id(f): i for i, f in enumerate(futures)}
        results: list[dict[str, Any] | None] = [None] * len(calls)
        for fut in cluster_completed(client, futures):  # an error, not a hang, once no worker is left
            i = index[id(fut)]
            try:
                res = fut.result()
            except Exception as exc:  # noqa: BLE001 - a worker was lost
                res = {"error": f"{type(exc).__name__}: {exc}", "units": list(calls[i][-1])}
            results[i] = _advance(bar, res, calls[i][-1], desc)
        return results  # type: ignore[return-value]
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _prefect_api_url() -> str:
    """The API a Prefect run reports to (Dask worker processes must report to the same one)."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if url:
        return url
    from prefect.server.api.server import SubprocessASGIServer  # pragma: no cover - a flow run without a server

    server = SubprocessASGIServer()
    server.start()
    return server.api_url


def task_runner(dask_address: str | None = None, dask_workers: int = 0, workers: int = 0):
    """The task runner of a Prefect run's jobs: ``None`` (the flow's thread pool),
    a process pool, or a ``DaskTaskRunner``."""
    if dask_address or dask_workers:
        from prefect_dask import DaskTaskRunner

        if dask_address:
            from prefect.settings import PREFECT_API_URL

            from .cluster import ClusterError

            if not PREFECT_API_URL.value():
                raise ClusterError(f"--dask-address {dask_address}: the workers report their Prefect task runs to "
                                   "the flow's API, and a temporary local one is out of their reach; start a server "
                                   "(`prefect server start`) and set PREFECT_API_URL for the flow")
            return DaskTaskRunner(address=dask_address)
        env = {"PREFECT_API_URL": _prefect_api_url(), "OMP_NUM_THREADS": "1"}
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={"n_workers": int(dask_workers), "threads_per_worker": 1, "processes": True,
                            "dashboard_address": ":0", "env": env, "silence_logs": logging.WARNING},
        )
    if workers and workers > 1:
        from prefect.task_runners import ProcessPoolTaskRunner

        return ProcessPoolTaskRunner(max_workers=int(workers))
    return None


def _run_prefect(job: Callable, calls: list[tuple], desc: str, bar, dask_address: str | None, dask_workers: int,
                 workers: int) -> list[dict[str, Any]]:
    """Jobs as Prefect task runs; with another task runner in a subflow (a flow's
    own task runner is fixed when it starts, and deployments take it as parameters)."""
    runner = task_runner(dask_address, dask_workers, workers)
    if runner is None:
        return _submit_and_collect(prefect_task(job), calls, bar, desc)
    _SUBFLOW_BAR["bar"] = bar
    try:
        return _scale_out_flow().with_options(task_runner=runner)(job, calls, desc, bool(dask_address or dask_workers))
    finally:
        _SUBFLOW_BAR.pop("bar", None)


# The progress bar of the running scale-out subflow. Not a parameter nor a closure variable: Prefect
# pickles the flow and its parameters into every task's context, and a tqdm bar does not unpickle.
_SUBFLOW_BAR: dict[str, Any] = {}


@functools.lru_cache(maxsize=None)
def _scale_out_flow():
    """The scale-out subflow (made on first use: this module does not import Prefect)."""
    from prefect import flow

    return flow(_scale_out, name="scale-out", validate_parameters=False)


def _scale_out(job: Callable, calls: list[tuple], desc: str, dask: bool) -> list[dict[str, Any]]:
    """The scale-out subflow's body (module level: pickled by reference into the tasks' context)."""
    return _submit_and_collect(prefect_task(job), calls, _SUBFLOW_BAR["bar"], desc, dask=dask)


def _submit_and_collect(task_obj, calls: list[tuple], bar, desc: str, dask: bool = False) -> list[dict[str, Any]]:
    from prefect.futures import as_completed as prefect_completed

    if dask:  # check the workers first; then wait on the Dask futures, failing once no worker is left
        from prefect.context import FlowRunContext
        from prefect.settings import PREFECT_API_URL

        from .cluster import as_completed as cluster_completed
        from .cluster import check_workers

        client = FlowRunContext.get().task_runner.client
        check_workers(client, api_url=PREFECT_API_URL.value())
    futures = [task_obj.submit(*args) for args in calls]
    index = {id(f): i for i, f in enumerate(futures)}
    if dask:
        by_dask = {id(f.wrapped_future): f for f in futures}
        done = (by_dask[id(d)] for d in cluster_completed(client, [f.wrapped_future for f in futures]))
    else:
        done = prefect_completed(futures)
    results: list[dict[str, Any] | None] = [None] * len(calls)
    for fut in done:
        i = index[id(fut)]
        try:
            res = fut.result()
        except Exception as exc:  # noqa: BLE001 - recorded, the other batches go on
            res = {"error": f"{type(exc).__name__}: {exc}", "units": list(calls[i][-1])}
        results[i] = _advance(bar, res, calls[i][-1], desc)
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


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Limit intra-op threads of numpy/torch/OpenCV inside a worker."""
    old = os.environ.get("OMP_NUM_THREADS")
    if n:
        os.environ["OMP_NUM_THREADS"] = str(n)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = old


def cached(factory: Callable[..., Any]) -> Callable[..., Any]:
    """Build an object (an estimator with its model) once per process and key."""
    cache: dict[Any, Any] = {}

    def get(*key: Any) -> Any:
        if key not in cache:
            cache[key] = factory(*key)
        return cache[key]

    get.cache = cache  # type: ignore[attr-defined]
    return get
