"""notebooks/inspect_priors.ipynb runs top to bottom on the demo store (so it never rots)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "inspect_priors.ipynb"
KERNEL = "reid-priors-venv"


@pytest.fixture()
def venv_kernel(tmp_path, monkeypatch) -> str:
    """A kernelspec whose interpreter is this test's Python (the project venv), found first on JUPYTER_PATH."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "reid-priors venv", "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL


def test_notebook_runs_on_the_demo_store(synthetic_store, venv_kernel, monkeypatch, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("REID_PRIORS_DEMO_STORE", str(synthetic_store))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name=venv_kernel,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on the first failing cell

    code = [c for c in nb.cells if c.cell_type == "code"]
    outputs = {c.source: c.outputs for c in code}
    assert all(o.output_type != "error" for outs in outputs.values() for o in outs)
    first = "".join(o.get("text", "") for o in code[0].outputs)
    assert first.strip() == f"python: {sys.executable}"
    store_cell = next(c for c in code if c.source.rstrip().endswith("a rich summary of the store"))
    html = store_cell.outputs[-1]["data"]["text/html"]
    assert "reid-priors store" in html and "priors/dsap" in html and "priors/mpn" in html
    figure_cells = [c for c in code if "views.show_" in c.source]
    assert len(figure_cells) == 7  # iuv, dsap, mpn, 3 galleries, dataset stats
    for c in figure_cells:
        pngs = [o for o in c.outputs if "image/png" in o.get("data", {})]
        assert len(pngs) == 1, c.source
    visrank = next(c for c in code if "--visrank" in c.source)
    assert [o for o in visrank.outputs if "image/png" in o.get("data", {})], "ranked results shown"
    written = code[-1].outputs[-1]["data"]["text/plain"]
    for name in ("dataset_stats.png", "dsap_000000.png", "iuv_000000.png", "mpn_000000.png", "worst_coverage.png"):
        assert name in written
