"""Thread policy of the compiled evaluation kernels: use the cores that are free now.

On a shared machine a kernel that starts one thread per core while other
processes keep those cores busy runs *slower* than a single thread (its
threads wait for each other at every barrier). So the numba kernels of
:mod:`reid_train.evaluation` run with :func:`free_cores` threads: the cores
this process may use (its CPU affinity) minus the runnable tasks of *other*
processes the kernel sees at its start (``/proc/loadavg``'s instantaneous
count less this process's own running threads, the smallest of a few
samples), at least 1. This process's own threads are left out because the
worker threads of the kernel that just finished still spin for a moment
(OpenMP's wait policy) and would otherwise count as load: back-to-back
kernels fell to one thread on an idle machine. ``REID_KERNEL_THREADS=n`` fixes the
count instead (e.g. for benchmarks).
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager

import numba


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _own_running_threads() -> int:
    """Threads of this process in state R (running or runnable) now."""
    running = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 1
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                running += f.read().rpartition(")")[2].split()[0] == "R"
        except (OSError, IndexError):
            continue  # the thread ended meanwhile
    return max(running, 1)  # the calling thread runs


_LOADAVG = "/proc/loadavg"


def _others_runnable_now() -> int | None:
    """Runnable tasks of other processes now; ``None`` if unknown."""
    try:
        with open(_LOADAVG) as f:
            total = int(f.read().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return None
    return max(0, total - _own_running_threads())


def free_cores(samples: int = 3, interval_s: float = 0.002) -> int:
    """Usable cores minus other processes' runnable tasks (fewest over ``samples``), in 1..usable."""
    fixed = os.environ.get("REID_KERNEL_THREADS")
    cores = usable_cores()
    if fixed:
        if not fixed.strip().isdigit() or int(fixed) < 1:
            raise ValueError(f"REID_KERNEL_THREADS={fixed!r}: give a whole number of threads >= 1, or unset it")
        return min(int(fixed), numba.config.NUMBA_NUM_THREADS)
    seen = []
    for k in range(samples):
        n = _others_runnable_now()
        if n is None:
            return min(cores, numba.config.NUMBA_NUM_THREADS)
        seen.append(n)
        if k + 1 < samples:
            time.sleep(interval_s)
    return max(1, min(cores - min(seen), numba.config.NUMBA_NUM_THREADS))


@contextmanager
def kernel_threads(threads: int | None = None):
    """Run the numba kernels inside with ``threads`` threads (default :func:`free_cores`)."""
    previous = numba.get_num_threads()
    numba.set_num_threads(threads or free_cores())
    try:
        yield
    finally:
        numba.set_num_threads(previous)
