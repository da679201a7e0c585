"""What a flow's job is: a module-level function over a list of write units, retried, batched.

A job function decorated with :func:`unit_job` takes its list of unit numbers as its last
argument; it reopens the store in its own process, skips units already marked complete,
computes the rest and writes them unit by unit. Failures of single images are data (failure
rows), not exceptions; an exception in a job is retried (:func:`call_with_retries`, or the
Prefect task of :func:`prefect_task`) and, if it persists, becomes the batch's result while the
other batches go on. Where jobs run is :func:`pipelines.runner.run_tasks`'s business.
"""
from __future__ import annotations

import functools
import logging
import time
from typing import Any, Callable, Iterable

log = logging.getLogger("pipelines")


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


def batches(units: Iterable[int], per_task: int) -> list[list[int]]:
    """Consecutive unit numbers grouped ``per_task`` at a time."""
    units = list(units)
    per_task = max(1, int(per_task))
    return [units[i:i + per_task] for i in range(0, len(units), per_task)]


def cached(factory: Callable[..., Any]) -> Callable[..., Any]:
    """Build an object (an estimator with its model) once per process and key."""
    cache: dict[Any, Any] = {}

    def get(*key: Any) -> Any:
        if key not in cache:
            cache[key] = factory(*key)
        return cache[key]

    get.cache = cache  # type: ignore[attr-defined]
    return get
