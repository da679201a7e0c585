"""bench/bench_priors_value.py (issue 14): the protocol's detection errors, its world, and a smoke run.

The benchmark itself runs in bench/ (BENCHMARKS.md); here only the pieces and a one-iteration run
on the suite's synthetic store."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import bench_module


@pytest.fixture(scope="module")
def bench():
    with bench_module("bench_priors_value") as mod:
        yield mod


def test_detection_errors_have_the_protocol_rates(bench):
    rng = np.random.default_rng(0)
    boxes = [bench.misaligned_box_error(rng) for _ in range(4000)]
    head = np.array([b.head_cut for b in boxes])
    feet = np.array([b.feet_cut for b in boxes])
    assert abs((head > 0).mean() - 0.15) < 0.02 and abs((feet > 0).mean() - 0.15) < 0.02
    assert not ((head > 0) & (feet > 0)).any()                 # a box cuts one end at most
    assert head[head > 0].min() >= 0.05 and head.max() <= 0.25 and feet.max() <= 0.30
    scale = np.array([b.scale for b in boxes])
    assert scale.min() >= 1.0 and scale.max() <= 1.45
    assert np.std([b.dx for b in boxes]) == pytest.approx(0.10, abs=0.01)


def test_world_is_planned_with_the_protocol_samplers(bench, tmp_path, monkeypatch):
    from priors.synthetic.dataset import read_image_table
    from priors.synthetic.render import BoxError

    monkeypatch.setattr(bench, "misaligned_box_error", lambda rng: BoxError(scale=1.4, head_cut=0.2))
    monkeypatch.setattr(bench, "OCCLUSION_P", 1.0)
    bench.render_world(tmp_path / "w", ids=2, images_per_id=2, seed=0, size=(48, 16))
    people = read_image_table(tmp_path / "w").query("pid > 0")
    assert len(people) == 4
    assert (people["box_scale"] == 1.4).all() and (people["box_head_cut"] == 0.2).all()
    assert (people["occlusion"] != "none").all()
    from priors.synthetic import dataset
    from priors.synthetic.render import sample_box_error
    assert dataset.sample_box_error is sample_box_error        # the swap does not outlive the call


def test_report_pairs_per_seed(bench):
    res = {"mpn": {0: {"rank1": 0.5, "mAP": 0.4, "seconds": 1.0}, 1: {"rank1": 0.6, "mAP": 0.5, "seconds": 1.0}},
           "mpn_mt_only": {0: {"rank1": 0.4, "mAP": 0.45, "seconds": 1.0},
                           1: {"rank1": 0.5, "mAP": 0.45, "seconds": 1.0}}}
    lines = bench.report(res, [0, 1])
    pair = next(line for line in lines if "mpn         - mpn_mt_only" in line)
    assert "10.0 ±  0.0 (higher in 2/2)" in pair and "(higher in 1/2)" in pair


def test_smoke_run_on_a_store(bench, synthetic_store, tmp_path):
    out = tmp_path / "bench"
    assert bench.main(["--tiny", "--store", str(synthetic_store), "--size", "128x64", "--variants", "pcb,dsa",
                       "--out", str(out), "--steps", "1"]) == 0
    res = json.loads((out / "results.json").read_text())["results"]
    assert set(res) == {"pcb", "dsa", "dsa_fused"}
    for name in res:
        assert 0.0 <= res[name]["0"]["mAP"] <= 1.0
    cmd = json.loads((out / "runs" / Path(synthetic_store).name / "pcb_s0" / "bench_cmd.json").read_text())
    assert "tasks=at_only" in cmd and "prior=uniform" in cmd and "epoch_multiplier=1" in cmd
    assert "resnet18_w16" in cmd and "part_dim=16" in cmd       # the v2 trunk, shared; MPN's part width


def test_runs_of_another_store_live_apart(bench, tmp_path):
    """A run is re-used or deleted only for its own store (oracle vs pose priors, S, threshold)."""
    oracle, pose = tmp_path / "store_a_oracle", tmp_path / "store_a_pose"
    assert bench.runs_root(tmp_path, oracle) != bench.runs_root(tmp_path, pose)
    assert "dsa_guide05" in bench.VARIANTS and "dsa_guide05" not in bench.PROTOCOL_VARIANTS


def test_pair_with_reads_prior_free_runs_of_the_same_world(bench, synthetic_store, tmp_path):
    (tmp_path / "store_oracle").symlink_to(synthetic_store)
    run = tmp_path / "runs" / "store_oracle" / "pcb_s3"
    run.mkdir(parents=True)
    run.joinpath("metrics.json").write_text(json.dumps({"final_eval": {"rank1": 0.25, "mAP": 0.5}}))
    got = bench.prior_free_runs(Path(synthetic_store), tmp_path / "runs" / "store_oracle", [3, 4], ["mpn", "dsa"])
    assert got == {"pcb": {3: {"rank1": 0.25, "mAP": 0.5, "seconds": 0.0, "history": []}}}
    assert bench.prior_free_runs(Path(synthetic_store), tmp_path / "runs" / "store_oracle", [3], ["pcb"]) == {}


def test_diagnostic_variants_change_only_their_knob(bench, tmp_path):
    import argparse

    args = argparse.Namespace(**bench.PRESETS["cpu"], amp="none")
    args.size = (96, 32)

    def cmd(name):
        return bench.fit_command(args, name, 0, tmp_path / "s", tmp_path / name, 640, 8)

    dsa, warm, half = cmd("dsa"), cmd("dsa_warmup30"), cmd("dsa_guide05")
    assert "warmup_epochs=8" in dsa and "warmup_epochs=24" in warm     # 10 % vs 30 % of 640 iterations / 8
    assert [x for x in warm if x not in dsa] == [str(tmp_path / "dsa_warmup30"), "warmup_epochs=24"]
    assert [x for x in half if x not in dsa] == [str(tmp_path / "dsa_guide05"), "guide_weight=0.5"]
    assert "part_dim=32" in cmd("mpn") and "milestones=[56]" in dsa and "resnet18_w16" in dsa
