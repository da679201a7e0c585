"""The progress bar's rate and ETA leave out each process's first unit (its start-up)."""
from __future__ import annotations

import io

import pipelines.runner as runner
from pipelines.runner import UnitBar, run_tasks


def test_rate_is_processes_over_mean_unit_seconds_without_each_process_first_unit():
    bar = UnitBar(total=20, file=io.StringIO(), processes=2)
    bar.record(1, 10.0, "a")  # first units: 9 s of start-up + 1 s of work, left out
    bar.record(1, 10.0, "b")
    assert bar.steady_units == 0  # nothing steady yet: the bar shows tqdm's own rate
    bar.record(1, 1.0, "a")
    bar.record(1, 3.0, "b")
    # 2 processes / mean(1 s, 3 s) = 1 unit/s; 16 units left -> ETA 16 s (the start-up would have made it ~40 s)
    assert bar.n == 4
    assert bar.format_dict["rate"] == 1.0
    bar.record(7, 7.0, "a")  # a job of 7 units: 7 units in 7 s
    assert (bar.steady_units, bar.steady_seconds) == (9, 11.0)
    assert bar.format_dict["rate"] == 2 * 9 / 11
    bar.record(8, 8.0, "b")
    assert bar.n == 19  # one unit left: only one process can still run
    assert bar.format_dict["rate"] == 1 * 17 / 19


def test_untimed_updates_still_count_units():
    bar = UnitBar(total=3, file=io.StringIO(), processes=1)
    bar.record(2)
    assert bar.n == 2 and bar.steady_units == 0


def _job(unit_list):
    return {"units": unit_list}


def test_a_serial_run_times_every_unit_in_this_process(monkeypatch, capsys):
    clock = iter([0.0, 5.0, 5.0, 7.0, 7.0, 9.0])  # perf_counter before/after each of 3 units: 5 s, 2 s, 2 s
    monkeypatch.setattr(runner.time, "perf_counter", lambda: next(clock))
    bars = []

    class Spy(UnitBar):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            bars.append(self)

    monkeypatch.setattr(runner, "UnitBar", Spy)
    results = run_tasks(_job, [([0, 1, 2],)], "test", progress=True, workers=1)
    assert results == [{"units": [0]}, {"units": [1]}, {"units": [2]}]
    (bar,) = bars
    assert bar.processes == 1 and bar.n == 3
    assert (bar.steady_units, bar.steady_seconds) == (2, 4.0)  # the first unit (5 s, start-up included) left out
    assert "3/3" in capsys.readouterr().err
