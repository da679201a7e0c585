"""Running the flows' jobs on a Dask cluster that users start themselves.

    dask scheduler --host 0.0.0.0 --port 8786                 # one machine
    dask worker tcp://SCHEDULER:8786 --nthreads 1             # each machine, any folder
    python -m pipelines build-dsap --store STORE --dask-address tcp://SCHEDULER:8786 ...

What a worker needs: this project installed in its Python (``make install``
or ``pip install .``; an editable install must be ``--config-settings
editable_mode=compat``, see below), the store reachable under the same path
or URL (for ``s3://`` stores the ``AWS_*`` variables in the worker's
environment), and, only when the flow is a Prefect flow run, a Prefect API it
can reach: the flow passes its own ``PREFECT_API_URL`` on to the tasks, so
set it to a server both can reach (a temporary local API is refused).

Why the editable mode matters. A worker puts its local directory first on
``sys.path``, and that directory holds dask's spill folder, named
``storage``. Python's path finder runs before setuptools' default editable
finder, and a folder without ``__init__.py`` is a namespace package, so
``import storage`` would find dask's folder (``cannot import name ... from
'storage' (unknown location)``). With the project root as a real ``sys.path``
entry (a compat-mode editable install, a regular install, or ``PYTHONPATH``)
the regular package wins over any namespace portion, wherever it sits.

Two guards make a broken cluster fail at once with a reason instead of
hanging: :func:`check_workers` (before any task is sent: a task that cannot
be unpickled kills the worker that receives it) and :func:`as_completed`
(while waiting: a cluster that has lost all its workers is an error after
``grace_s`` seconds, not an endless wait).
"""
from __future__ import annotations

import time
from typing import Any, Iterable, Iterator

PACKAGES = ("storage", "priors", "pipelines")
NO_WORKERS_GRACE_S = 60.0


class ClusterError(RuntimeError):
    """The Dask cluster cannot run the flow's jobs (one line, says what to fix)."""


def _make_probe():
    """The function run on every worker. Nested, so cloudpickle sends it by
    value: it must run even where the project cannot be imported at all."""

    def probe(names: tuple[str, ...], api_url: str | None) -> dict[str, Any]:
        import importlib
        import sys

        out: dict[str, Any] = {"sys_path_0": sys.path[0] if sys.path else "", "packages": {}}
        for name in names:
            try:
                mod = importlib.import_module(name)
            except Exception as exc:  # noqa: BLE001 - reported to the client
                out["packages"][name] = f"not importable ({type(exc).__name__}: {exc})"
                continue
            if getattr(mod, "__file__", None) is None:  # a namespace package: some folder named like ours
                where = ", ".join(getattr(mod, "__path__", []))
                out["packages"][name] = f"found as the folder {where}, not this project's package"
                sys.modules.pop(name, None)
        if api_url:
            import urllib.request

            try:
                urllib.request.urlopen(api_url.rstrip("/") + "/health", timeout=5).read()
            except Exception as exc:  # noqa: BLE001
                out["api"] = f"cannot reach the Prefect API {api_url} ({type(exc).__name__}: {exc})"
        return out

    return probe


def check_workers(client, api_url: str | None = None, timeout_s: float = 60.0) -> int:
    """Wait for at least one worker, then check that every worker imports this
    project's packages (and reaches ``api_url`` when given). Returns the number
    of workers; raises :class:`ClusterError` naming the worker and the fix."""
    address = getattr(client.scheduler, "address", "the scheduler")
    try:
        client.wait_for_workers(1, timeout=timeout_s)
    except (TimeoutError, OSError) as exc:
        raise ClusterError(f"no Dask worker joined {address} within {timeout_s:.0f} s: start workers with "
                           f"`dask worker {address} --nthreads 1` ({type(exc).__name__})") from None
    replies = client.run(_make_probe(), PACKAGES, api_url, on_error="return")
    problems = []
    for worker, reply in sorted(replies.items()):
        if isinstance(reply, BaseException):
            problems.append(f"{worker}: {type(reply).__name__}: {reply}")
            continue
        problems += [f"{worker}: {name} {what}" for name, what in reply["packages"].items()]
        if reply.get("api"):
            problems.append(f"{worker}: {reply['api']}")
    if problems:
        hint = ("install the project on every worker (`make install`, `pip install .`, or "
                "`pip install -e . --config-settings editable_mode=compat`) and start the workers again")
        if any("Prefect API" in p for p in problems):
            hint = "set PREFECT_API_URL to a Prefect server the workers can reach (or run without Prefect)"
        raise ClusterError(f"the Dask workers at {address} cannot run the jobs: {'; '.join(problems)}. Fix: {hint}")
    return len(replies)


def n_workers(client) -> int:
    """Workers the scheduler knows now (asks it; does not use a cached view)."""
    return len(client.nthreads())


def as_completed(client, futures: Iterable, grace_s: float = NO_WORKERS_GRACE_S, poll_s: float = 1.0
                 ) -> Iterator:
    """Yield Dask ``futures`` as they finish; raise :class:`ClusterError` when the
    cluster has had no worker for ``grace_s`` seconds (the tasks would wait for
    ever) or the scheduler stops answering."""
    pending = list(futures)
    address = getattr(client.scheduler, "address", "the scheduler")
    alone_since = None
    while pending:
        done = [f for f in pending if f.done()]
        if done:
            pending = [f for f in pending if not any(f is d for d in done)]
        else:
            time.sleep(poll_s)
        yield from done
        if done or not pending:
            alone_since = None
            continue
        try:
            workers = n_workers(client)
        except OSError as exc:
            raise ClusterError(f"lost the Dask scheduler at {address} with {len(pending)} jobs unfinished: "
                               f"{type(exc).__name__}: {exc}") from None
        if workers:
            alone_since = None
        elif alone_since is None:
            alone_since = time.monotonic()
        elif time.monotonic() - alone_since > grace_s:
            for f in pending:
                f.cancel()
            raise ClusterError(f"the Dask cluster at {address} has had no worker for {grace_s:.0f} s with "
                               f"{len(pending)} jobs unfinished (the workers died or were stopped; see their logs). "
                               f"Start workers again and re-run: finished units are kept")
