"""The flow machinery shared by ingest, build-dsap and build-mpn-priors.

Every flow is the same shape: a driver opens the store, creates (or resumes)
the groups it writes, then submits one Prefect task per *batch* of write
units (chunk-aligned: a batch is ``units_per_task`` consecutive units). A task
reopens the store in its own process, skips units already marked complete,
computes the rest and writes them unit by unit. Failures of single images are
data (failure rows), not exceptions; an exception in a task is retried by
Prefect and, if it persists, recorded for the whole batch while the other
batches go on.

Scale-out: ``dask_address`` (an existing scheduler) or ``dask_workers`` (a
``LocalCluster``) switches the flow to a ``DaskTaskRunner``. Units never
overlap between tasks, so workers never write the same unit. Workers are
checked before any task is sent and a cluster without workers fails the flow
(:mod:`pipelines.cluster`, which also says how to start workers).
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

from prefect import flow
from tqdm.auto import tqdm

log = logging.getLogger("pipelines")


def batches(units: Iterable[int], per_task: int) -> list[list[int]]:
    """Consecutive unit numbers grouped ``per_task`` at a time."""
    units = list(units)
    per_task = max(1, int(per_task))
    return [units[i:i + per_task] for i in range(0, len(units), per_task)]


def _prefect_api_url() -> str:
    """The API the flow reports to: the configured one, or the temporary local server.

    Dask worker processes must report to the same server; left alone, each
    would start a temporary server of its own.
    """
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if url:
        return url
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start()
    return server.api_url


def task_runner(dask_address: str | None = None, dask_workers: int = 0):
    """``None`` (Prefect's default thread pool) or a ``DaskTaskRunner``."""
    if not dask_address and not dask_workers:
        return None
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:  # pragma: no cover - prefect-dask is a core dependency
        raise ImportError("Dask scale-out needs prefect-dask: pip install prefect-dask") from exc
    if dask_address:
        from prefect.settings import PREFECT_API_URL

        from .cluster import ClusterError

        if not PREFECT_API_URL.value():
            raise ClusterError(f"--dask-address {dask_address}: the workers report their Prefect task runs to the "
                               "flow's API, and a temporary local one is out of their reach; start a server "
                               "(`prefect server start`) and set PREFECT_API_URL for the flow")
        return DaskTaskRunner(address=dask_address)
    env = {"PREFECT_API_URL": _prefect_api_url(), "OMP_NUM_THREADS": "1"}
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={"n_workers": int(dask_workers), "threads_per_worker": 1, "processes": True,
                        "dashboard_address": None, "env": env,
                        "silence_logs": logging.WARNING},
    )


def run_tasks(task_obj, calls: list[tuple], desc: str, progress: bool = True,
              dask_address: str | None = None, dask_workers: int = 0) -> list[dict[str, Any]]:
    """Submit ``task_obj(*args)`` for each ``args`` in ``calls`` and collect the results.

    Without Dask the tasks run on the calling flow's task runner. With Dask
    they run in a subflow whose task runner is a ``DaskTaskRunner`` (a flow's
    own task runner is fixed when it starts, and the deployments take the
    scheduler address as a parameter).
    """
    runner = task_runner(dask_address, dask_workers)
    if runner is None:
        return collect([task_obj.submit(*args) for args in calls], desc, progress)
    return _dask_subflow.with_options(task_runner=runner)(task_obj, calls, desc, progress)


@flow(name="scale-out", validate_parameters=False)
def _dask_subflow(task_obj, calls: list[tuple], desc: str, progress: bool) -> list[dict[str, Any]]:
    from prefect.context import FlowRunContext
    from prefect.settings import PREFECT_API_URL

    from . import cluster

    client = FlowRunContext.get().task_runner.client
    cluster.check_workers(client, api_url=PREFECT_API_URL.value())  # before a task can kill a worker
    futures = [task_obj.submit(*args) for args in calls]
    for _ in cluster.as_completed(client, [f.wrapped_future for f in futures]):
        pass  # raises when the cluster has lost all its workers
    return collect(futures, desc, progress)


def collect(futures: list, desc: str, progress: bool = True) -> list[dict[str, Any]]:
    """Wait for task futures with a progress bar; a failed batch becomes a result, not a crash."""
    results: list[dict[str, Any]] = []
    bar = tqdm(total=len(futures), desc=desc, unit="batch", disable=not progress or not futures)
    for fut in futures:
        try:
            results.append(fut.result())
        except Exception as exc:  # noqa: BLE001 - recorded, the other batches go on
            log.error("%s: a batch failed after its retries: %s", desc, exc)
            results.append({"error": f"{type(exc).__name__}: {exc}", "units": getattr(fut, "units", None)})
        bar.update(1)
    bar.close()
    return results


def summarize_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over the task results of one flow run (extra integer counters are summed too)."""
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


def finish(flow_name: str, results: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """The summary a build flow returns, printed as one line."""
    summary = {**fields, **summarize_results(results)}
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
