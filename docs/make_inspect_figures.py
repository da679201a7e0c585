"""Make docs/figures/inspect_*.png from the real-crop store built with the pose backends.

    python -m pipelines ingest --dataset market1501 --root ../shared/data/mini_market1501 --store /tmp/mm
    python -m pipelines build-dsap --store /tmp/mm --estimator pose-chart
    python -m pipelines build-mpn-priors --store /tmp/mm --parsing pose --segmentation pose
    python docs/make_inspect_figures.py /tmp/mm docs/figures      # needs Debian's chromium for the last one
"""
import subprocess
import sys
import tempfile
from pathlib import Path

from storage import open_store, views
from storage.report import write_report

s = open_store(sys.argv[1])
out = Path(sys.argv[2])
DPI = 100
views.show_iuv(s, 3).savefig(out / "inspect_iuv.png", dpi=DPI)
views.show_dsap(s, 3).savefig(out / "inspect_dsap.png", dpi=DPI)
views.show_mpn_prior(s, 91).savefig(out / "inspect_mpn.png", dpi=DPI)
views.show_mpn_prior(s, 35).savefig(out / "inspect_mpn_fallback.png", dpi=DPI)
for k in views.WORST_KINDS:
    views.show_worst_cases(s, k, n=8).savefig(out / f"inspect_worst_{k}.png", dpi=DPI)
views.show_dataset_stats(s).savefig(out / "inspect_dataset_stats.png", dpi=DPI)
with tempfile.TemporaryDirectory() as tmp:
    index = write_report(s, Path(tmp) / "report", max_examples=2)
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp}/profile",
                    f"--screenshot={out / 'inspect_report.png'}", "--window-size=1200,1500", index.as_uri()],
                   check=True, capture_output=True)
