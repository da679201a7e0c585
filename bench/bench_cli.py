"""How long the commands take before they do anything, and what --workers buys (issue 16).

    python bench/bench_cli.py --work /tmp/bench_cli                     # this checkout
    python bench/bench_cli.py --work /tmp/bench_cli_old --code ../main  # another checkout, same commands
    python bench/bench_cli.py --work /tmp/bench_cli --scaling           # + pose-chart with 1 vs 2 workers, ETA

Each command runs as a user would type it (a fresh `python -m ...` process, PREFECT_API_URL unset,
PREFECT_HOME in --work): first run, no-op re-run, and mistakes (a --root that does not exist, a
--store that is not a store). Wall time and the child's CPU time (user + sys, steadier on a
loaded box) are the median of --repeat runs; "lines" counts what the mistake printed. The flags
are the old spellings (--size, --no-progress), which both old and new code accept.

--scaling ingests the real mini Market-1501 crops (../shared/data) and runs build-dsap with the
CPU-bound pose-chart estimator (mediapipe) with --workers 1 and --workers 2 on copies of one store
(outputs compared), then reads the progress bar's ETA when a quarter of the units are done and
compares elapsed + ETA with the true total.
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def run(cmd: list[str], env: dict, cwd: Path) -> tuple[float, float, int, str]:
    """(wall s, child CPU s, exit status, stderr) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, out.returncode, out.stderr + out.stdout


def timed(name: str, cmd: list[str], env: dict, cwd: Path, repeat: int, rows: list) -> None:
    runs = [run(cmd, env, cwd) for _ in range(repeat)]
    wall = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[1] for r in runs)
    rc, text = runs[-1][2], runs[-1][3]
    lines = len([line for line in text.splitlines() if line.strip()])
    rows.append((name, wall, cpu, rc, lines))
    print(f"{name:34s} {wall:7.2f} s wall {cpu:6.2f} s cpu  exit {rc}  {lines} lines", flush=True)
    if rc:
        last = [line for line in text.splitlines() if line.strip()][-1:]
        print(f"    last line: {last[0][:160] if last else ''}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="scratch folder (deleted first)")
    ap.add_argument("--code", default=str(HERE), help="checkout whose commands are timed (default: this one)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per command; the median is reported (default 3)")
    ap.add_argument("--scaling", action="store_true", help="also time pose-chart with 1 vs 2 workers and the ETA")
    ap.add_argument("--data", default=str(HERE.parent / "shared" / "data" / "mini_market1501"),
                    help="real crops in the Market-1501 layout for --scaling")
    args = ap.parse_args()
    work = Path(args.work).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    # as a user's shell: no Prefect server configured (a longer ephemeral start-up timeout is kept,
    # so that old code that starts a temporary server gets timed rather than timing out on a loaded box)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PREFECT_") or k == "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"}
    env |= {"PYTHONPATH": str(Path(args.code).resolve()), "PREFECT_HOME": str(work / "prefect_home")}
    py = [sys.executable, "-m"]
    code = Path(args.code).resolve()
    subprocess.run([*py, "pipelines", "synth", "--out", str(work / "world"), "--ids", "6", "--images-per-id", "4",
                    "--quiet"], env=env, cwd=code, check=True, capture_output=True)
    store = str(work / "store")
    ingest = [*py, "pipelines", "ingest", "--dataset", "market1501", "--root", str(work / "world"), "--store", store,
              "--size", "128x64", "--no-progress"]
    dsap = [*py, "pipelines", "build-dsap", "--store", store, "--estimator", "oracle", "--no-progress"]
    mpn = [*py, "pipelines", "build-mpn-priors", "--store", store, "--parsing", "oracle", "--segmentation", "oracle",
           "--input-size", "128x64", "--no-progress"]
    rows: list = []
    timed("ingest (first run)", ingest, env, code, 1, rows)
    timed("ingest (no-op re-run)", ingest, env, code, args.repeat, rows)
    timed("build-dsap (first run)", dsap, env, code, 1, rows)
    timed("build-dsap (no-op re-run)", dsap, env, code, args.repeat, rows)
    timed("build-mpn-priors (first run)", mpn, env, code, 1, rows)
    timed("build-mpn-priors (no-op re-run)", mpn, env, code, args.repeat, rows)
    bad_root = [*py, "pipelines", "ingest", "--dataset", "market1501", "--root", str(work / "nope"),
                "--store", str(work / "s2"), "--no-progress"]
    timed("ingest --root does not exist", bad_root, env, code, args.repeat, rows)
    bad_store = [*py, "pipelines", "build-dsap", "--store", str(work / "world"), "--estimator", "oracle"]
    timed("build-dsap --store not a store", bad_store, env, code, args.repeat, rows)
    timed("storage verify", [*py, "storage", "verify", store], env, code, args.repeat, rows)
    if args.scaling:
        scaling(work, env, code, py, Path(args.data))
    return 0


def scaling(work: Path, env: dict, code: Path, py: list[str], data: Path) -> None:
    if not data.is_dir():
        print(f"no real crops at {data}: --scaling skipped")
        return
    base = work / "real"
    subprocess.run([*py, "pipelines", "ingest", "--dataset", "market1501", "--root", str(data), "--store", str(base),
                    "--size", "256x128", "--unit-size", "8", "--no-progress"], env=env, cwd=code, check=True,
                   capture_output=True)
    walls = {}
    for workers in (1, 2):
        store = work / f"real_w{workers}"
        shutil.copytree(base, store)
        cmd = [*py, "pipelines", "build-dsap", "--store", str(store), "--estimator", "pose-chart",
               "--workers", str(workers)]
        wall, cpu, rc, text = run(cmd, env, code)
        walls[workers] = wall
        print(f"pose-chart build-dsap --workers {workers}: {wall:7.2f} s wall  exit {rc}", flush=True)
        if workers == 2:
            eta_check(text, wall)
    same = subprocess.run(["diff", "-rq", "-x", "zarr.json", str(work / "real_w1" / "priors"),
                           str(work / "real_w2" / "priors")], capture_output=True, text=True)
    print(f"speed-up 2 workers vs 1: {walls[1] / walls[2]:.2f}x; priors identical: {same.returncode == 0}")


def eta_check(text: str, wall: float) -> None:
    """Elapsed + remaining shown by the bar at the first update past 25 % vs the bar's final elapsed."""
    bars = re.findall(r"build-dsap:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+) \[(\d+:\d+)<(\d+:\d+|\?)", text)

    def sec(t: str) -> int:
        m, s = t.split(":")
        return int(m) * 60 + int(s)

    if not bars:
        print("no progress bar output found")
        return
    total = int(bars[-1][1])
    final = sec(bars[-1][2])
    for n, _, elapsed, remaining in bars:
        if int(n) >= total / 4 and remaining != "?":
            predicted = sec(elapsed) + sec(remaining)
            print(f"ETA at {n}/{total} units: elapsed {sec(elapsed)} s + remaining {sec(remaining)} s = "
                  f"{predicted} s predicted vs {final} s true ({predicted / max(final, 1):.2f}x)")
            return


if __name__ == "__main__":
    sys.exit(main())
