"""The progress bar of a flow's write units and how each finished job advances it."""
from __future__ import annotations

import logging
from typing import Any

from tqdm.auto import tqdm

log = logging.getLogger("pipelines")


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


def advance(bar, result: dict[str, Any], units: list[int], desc: str, seconds: float | None = None,
             process: Any = None) -> dict[str, Any]:
    """Count a finished job's ``units`` on ``bar`` (timed, for a :class:`UnitBar`) and log a batch error."""
    if "error" in result:
        log.error("%s: units %s failed after their retries: %s", desc, units, result["error"])
    if isinstance(bar, UnitBar):
        bar.record(len(units), seconds, process)
    else:
        bar.update(len(units))
    return result
