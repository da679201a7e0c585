"""Jobs on a Dask cluster or as Prefect task runs (the scale-out half of :func:`pipelines.runner.run_tasks`).

* **on Dask** outside a Prefect run (:func:`run_dask`): a distributed ``Client`` on an existing
  scheduler (``dask_address``) or a ``LocalCluster`` of ``dask_workers`` processes;
* **in a Prefect flow run** (:func:`run_prefect`): Prefect task runs on the flow's thread pool,
  or, in a ``scale-out`` subflow, on a process pool or a ``DaskTaskRunner`` (:func:`task_runner`).

The workers are checked before any job is sent, and a cluster that has lost all its workers
fails the run (:mod:`pipelines.cluster`, which also says how to start workers and what they
need). Prefect and Dask are imported only when a run uses them.
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Callable

from pipelines.jobs import call_with_retries, prefect_task
from pipelines.progress import advance


def run_dask(job: Callable, calls: list[tuple], bar, desc: str, dask_address: str | None, dask_workers: int
             ) -> list[dict[str, Any]]:
    """Jobs on a Dask cluster without Prefect, in completion order on ``bar``; results in the order of ``calls``."""
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
            results[i] = advance(bar, res, calls[i][-1], desc)
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


def run_prefect(job: Callable, calls: list[tuple], desc: str, bar, dask_address: str | None, dask_workers: int,
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
        results[i] = advance(bar, res, calls[i][-1], desc)
    return results  # type: ignore[return-value]
