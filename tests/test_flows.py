"""build-dsap and build-mpn-priors flows on the synthetic world: results, resume, refusals naming the
changed setting, a local process pool, Dask, a Prefect flow run, kill."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipelines.build_dsap import build_dsap_flow
from pipelines.build_mpn import build_mpn_flow
from pipelines.ingest import ingest_flow
from storage import StoreError, open_store
from storage.verify import verify_store

ROOT = Path(__file__).resolve().parents[1]


def _digest(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not str(p.relative_to(root)).startswith(skip)}


def _fresh_store(tmp_path: Path, world: Path, name: str, unit_size: int = 8) -> Path:
    store = tmp_path / name
    ingest_flow(dataset="market1501", root=str(world), store=str(store), image_size="128x64", unit_size=unit_size,
                progress=False)
    return store


def test_oracle_dsap_and_mpn_groups(synthetic_store):
    s = open_store(synthetic_store)
    assert set(s.groups) == {"estimates/oracle", "priors/dsap", "priors/mpn"}
    assert verify_store(s).ok
    dsap = s.group("priors/dsap")
    assert dsap.arrays["dsap"].shape == (s.n_images, 24, 3, 32, 32)
    assert dsap.provenance["params"]["S"] == 32
    assert dsap.provenance["inputs"]["estimates/oracle"]["producer"]["name"] == "oracle"
    cov = dsap.table("coverage")
    assert cov["image_id"].tolist() == list(range(s.n_images))
    assert (cov["parts_present"] >= 6).all()  # every synthetic person shows head, torso, limbs
    mpn = s.group("priors/mpn")
    assert mpn.arrays["mask"].shape == (s.n_images, 8, 4)
    stats = mpn.table("stats")
    assert {"oracle"} == set(stats["parsing"]) == set(stats["segmentation"])
    roi = mpn.read("roi", np.arange(s.n_images))
    assert (roi[:, 0] <= roi[:, 1]).all() and np.array_equal(roi[:, 0], stats["upper"])


def test_oracle_dsap_same_colour_in_same_cells(synthetic_store):
    """Same (part, U, V) cell = same point of the body: one identity's DSAP-images agree across
    poses and cameras far better than two identities' do."""
    s = open_store(synthetic_store)
    ok = s.ok_index
    g = s.group("priors/dsap")
    dsap = g.read("dsap", ok["image_id"]).astype(np.float32)
    valid = g.read("valid", ok["image_id"])
    # per-image chromaticity removes the camera's illumination gain
    chroma = dsap / np.maximum(dsap.sum(axis=2, keepdims=True), 1.0)
    pids = ok["pid"].to_numpy()
    same, diff = [], []
    n = len(ok)
    for a in range(n):
        for b in range(a + 1, n):
            both = valid[a] & valid[b]
            if both.sum() < 50:
                continue
            d = np.abs(chroma[a] - chroma[b]).sum(axis=1)[both].mean()
            (same if pids[a] == pids[b] else diff).append(d)
    assert len(same) > 20 and len(diff) > 100
    assert np.median(same) < 0.5 * np.median(diff)


def test_rerun_resumes_and_other_settings_are_refused_by_name(synthetic_store):
    again = build_dsap_flow(store=str(synthetic_store), estimator="oracle", dsap_size=32, progress=False)
    assert again["units_written"] == 0 and again["units_skipped"] == len(open_store(synthetic_store).units())
    with pytest.raises(StoreError, match=r"S was 32, now 16 \(--dsap-size\)"):
        build_dsap_flow(store=str(synthetic_store), estimator="oracle", dsap_size=16, progress=False)
    with pytest.raises(StoreError, match=r"K was 6, now 4 \(--parts\)"):
        build_mpn_flow(store=str(synthetic_store), parsing="oracle", segmentation="oracle", input_size="128x64",
                       parts=4, progress=False)
    with pytest.raises(StoreError, match=r"input_size was \[128, 64\], now \[256, 128\] \(--input-size\)"):
        build_mpn_flow(store=str(synthetic_store), parsing="oracle", segmentation="oracle", input_size="256x128",
                       progress=False)
    assert open_store(synthetic_store).group("priors/mpn").provenance["params"]["K"] == 6  # untouched


def test_rewarp_with_other_S_reuses_the_estimate(tmp_path, synthetic_world):
    store = _fresh_store(tmp_path, synthetic_world, "s")
    build_dsap_flow(store=str(store), estimator="oracle", dsap_size=32, progress=False)
    iuv_before = _digest(store / "estimates")
    build_dsap_flow(store=str(store), estimator="oracle", dsap_size=8, overwrite=True, progress=False)
    s = open_store(store)
    assert s.group("priors/dsap").arrays["dsap"].shape[-1] == 8
    assert _digest(store / "estimates") == iuv_before  # the estimator did not run again


def _build_both(store: Path, **how) -> None:
    build_dsap_flow(store=str(store), estimator="oracle", progress=False, **how)
    build_mpn_flow(store=str(store), parsing="oracle", segmentation="oracle", input_size="128x64", progress=False,
                   **how)


@pytest.mark.parametrize("how", [{"workers": 2}, {"dask_workers": 2}], ids=["process-pool", "dask"])
def test_two_processes_equal_one(tmp_path, synthetic_world, monkeypatch, how):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    one = _fresh_store(tmp_path, synthetic_world, "one", unit_size=4)
    two = tmp_path / "two"
    shutil.copytree(one, two)
    _build_both(one, workers=1)
    _build_both(two, **how)
    assert verify_store(open_store(two)).ok
    a, b = _digest(one), _digest(two)
    assert a.keys() == b.keys() and a == b


def test_prefect_flow_run_reports_every_batch_and_writes_the_same_store(tmp_path, synthetic_world, prefect_api,
                                                                         monkeypatch):
    """The deployments' flows (pipelines.flows) run the same functions as Prefect flow and task runs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from pipelines import flows

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    local = _fresh_store(tmp_path, synthetic_world, "local", unit_size=4)
    served = tmp_path / "served"
    shutil.copytree(local, served)
    build_dsap_flow(store=str(local), estimator="oracle", progress=False)
    # workers=2: the task runs go to Prefect's process pool (the README cycle covers the default thread pool)
    import datetime

    t0 = datetime.datetime.now(datetime.timezone.utc)
    # workers=2: the task runs go to Prefect's process pool in a "scale-out" subflow
    # (the README cycle covers the default thread pool)
    state = flows.build_dsap_flow(store=str(served), estimator="oracle", units_per_task=2, workers=2, progress=False,
                                  return_state=True)
    assert state.is_completed() and _digest(local) == _digest(served)
    with get_client(sync_client=True) as client:
        run = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))[0]
        tasks = [t for t in client.read_task_runs() if t.name.startswith("dsap_units") and t.start_time >= t0]
    n_units = len(open_store(served).units())
    assert run.state.is_completed()
    assert len(tasks) == -(-n_units // 2) and all(t.state.is_completed() for t in tasks)


def test_cli_reports_to_the_server_when_prefect_api_url_is_set(tmp_path, synthetic_world, prefect_api):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    store = _fresh_store(tmp_path, synthetic_world, "s")
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_LOGGING_LEVEL": "ERROR"}

    def runs() -> int:
        with get_client(sync_client=True) as client:
            return len(client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["build-dsap"]))))

    before = runs()
    out = subprocess.run([sys.executable, "-m", "pipelines", "build-dsap", "--store", str(store), "--estimator",
                          "oracle", "-q"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert runs() == before + 1 and verify_store(open_store(store)).ok


SLOW_WRITER = """
import sys, time
from storage.writer import UnitWriter
_orig = UnitWriter.write_unit
def _slow(self, *a, **k):
    time.sleep(0.25)
    return _orig(self, *a, **k)
UnitWriter.write_unit = _slow
from pipelines.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def test_build_dsap_cli_kill_and_resume(tmp_path, synthetic_world):
    clean = _fresh_store(tmp_path, synthetic_world, "clean", unit_size=4)
    killed = tmp_path / "killed"
    shutil.copytree(clean, killed)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"SOURCE_DATE_EPOCH": "1700000000"}
    script = tmp_path / "slow.py"
    script.write_text(SLOW_WRITER)
    args = ["build-dsap", "--estimator", "oracle", "--workers", "1", "--quiet", "--store"]
    subprocess.run([sys.executable, "-m", "pipelines", *args, str(clean)], check=True, env=env, cwd=ROOT,
                   capture_output=True)
    proc = subprocess.Popen([sys.executable, str(script), *args, str(killed)], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    markers = killed / "units" / "priors" / "dsap"
    deadline = time.time() + 180
    while time.time() < deadline and len(list(markers.glob("*.json")) if markers.exists() else []) < 2:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    n_units = len(open_store(killed).units())
    assert 2 <= len(list(markers.glob("*.json"))) < n_units, "the flow must be killed mid-run"
    assert not verify_store(open_store(killed)).ok
    subprocess.run([sys.executable, "-m", "pipelines", *args, str(killed)], check=True, env=env, cwd=ROOT,
                   capture_output=True)
    assert verify_store(open_store(killed)).ok
    assert _digest(killed) == _digest(clean)


def test_densepose_sources_need_an_iuv_group(tmp_path, synthetic_world):
    store = _fresh_store(tmp_path, synthetic_world, "s")
    with pytest.raises(ValueError, match="run build-dsap first"):
        build_mpn_flow(store=str(store), parsing="densepose", segmentation="oracle", progress=False)
    build_dsap_flow(store=str(store), estimator="oracle", progress=False)
    out = build_mpn_flow(store=str(store), parsing="densepose", segmentation="densepose", input_size="128x64",
                         progress=False)
    assert out["images"] == open_store(store).n_images
    prov = open_store(store).group("priors/mpn").provenance
    assert [p["name"] for p in prov["producer"]] == ["iuv-parsing", "iuv-segmentation"]
    assert "estimates/oracle" in prov["inputs"]


def roi_errors(store_path) -> dict[str, float]:
    import json

    from priors.synthetic import read_image_table
    from priors.synthetic.truth import roi_extent_error

    s = open_store(store_path)
    root = Path(s.attrs["source_root"])
    src_h = json.loads((root / "groundtruth" / "meta.json").read_text())["args"]["size"][0]
    stats = s.group("priors/mpn").table("stats").merge(s.ok_index[["image_id", "relpath"]], on="image_id")
    return roi_extent_error(stats, read_image_table(root), s.group("priors/mpn").arrays["mask"].shape[1], src_h)


def test_oracle_roi_tracks_the_true_person_extent(synthetic_store):
    e = roi_errors(synthetic_store)
    assert e["cut_fraction"] > 0.1  # the world really has cut-off heads/feet
    # binarising 16x16-pixel cells at half coverage drops thin feet/hair rows: within about a row
    assert e["upper_mae_rows"] < 1.0 and e["lower_mae_rows"] < 1.25, e
    assert e["correlation"] > 0.8  # the ROI moves with the person, it is not the whole image
