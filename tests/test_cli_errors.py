"""Every user error of the command lines is one clear line (exit 2), found before any work starts.

Walks the common mistakes (issues 15 and 16): wrong paths, a folder that is not the dataset's
layout, values no run can use, P larger than the identities, missing priors, unknown methods, an
existing run, and checks the message and that nothing was left behind.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from storage.cli import run_cli

ROOT = Path(__file__).resolve().parents[1]


def _fails(main, argv: list[str], capsys) -> str:
    """Run a CLI's main in-process; return its one stderr line (exit status 2)."""
    try:
        code = run_cli(main, argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and "WARNING" not in line]
    assert code == 2, f"exit {code}: {err}"
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def pipelines_main():
    from pipelines.__main__ import main

    return main


@pytest.fixture(scope="module")
def fit_main():
    from reid_train.fit import main

    return main


def test_pipelines_mistakes(pipelines_main, synthetic_world, synthetic_store, tmp_path, capsys):
    world, store = str(synthetic_world), str(synthetic_store)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    not_market = tmp_path / "photos"
    (not_market / "holiday").mkdir(parents=True)
    ingest = ["ingest", "--dataset", "market1501", "--root", world, "--store"]
    cases = [
        (["ingest", "--dataset", "market1501", "--root", str(tmp_path / "nope"), "--store", str(tmp_path / "s")],
         "argument --root: " + str(tmp_path / "nope") + " does not exist"),
        ([*ingest, str(a_file)], "is a file, not a store folder"),
        ([*ingest, str(tmp_path / "s"), "--unit-size", "0"], "--unit-size: must be in 1..4096, got 0"),
        ([*ingest, str(tmp_path / "s"), "--unit-size", "-1"], "--unit-size: must be in 1..4096, got -1"),
        ([*ingest, str(tmp_path / "s"), "--image-size", "100000x100000"], "each side must be in 1..4096"),
        ([*ingest, str(tmp_path / "s"), "--image-size", "256"], "size must look like HxW"),
        ([*ingest, str(tmp_path / "s"), "--set", "variant"], "expected KEY=VALUE"),
        (["ingest", "--dataset", "market1502", "--root", world, "--store", str(tmp_path / "s")],
         "invalid choice: 'market1502'"),
        (["ingest", "--dataset", "market1501", "--root", str(not_market), "--store", str(tmp_path / "s")],
         "bounding_box_train is missing"),
        (["build-dsap", "--store", store, "--estimator", "oracle", "--dsap-size", "0"], "must be in 1..256, got 0"),
        (["build-dsap", "--store", store, "--estimator", "oracle", "--dsap-size", "-4", "--overwrite"],
         "must be in 1..256, got -4"),
        (["build-dsap", "--store", str(tmp_path / "nope"), "--estimator", "oracle"], "does not exist"),
        (["build-dsap", "--store", world, "--estimator", "oracle"], "is not a store (no zarr.json)"),
        (["build-dsap", "--store", store, "--estimator", "densepose", "--weights", str(tmp_path / "w.pkl")],
         "w.pkl does not exist"),
        (["build-dsap", "--store", store, "--estimator", "magic"], "invalid choice: 'magic'"),
        (["build-dsap", "--store", store, "--estimator", "oracle", "--dsap-size", "16"],
         "S was 32, now 16 (--dsap-size)"),
        (["build-mpn-priors", "--store", store, "--parsing", "oracle", "--segmentation", "oracle",
          "--input-size", "128x64", "--parts", "4"], "K was 6, now 4 (--parts)"),
        (["build-mpn-priors", "--store", store, "--parsing", "oracle", "--segmentation", "oracle",
          "--threshold", "2"], "--threshold: must be in [0, 1]"),
        (["build-dsap", "--store", store, "--estimator", "oracle", "--workers", "-3"], "must be >= 0, got -3"),
        (["build-dsap", "--store", store, "--estimator", "oracle", "--canvas", "2x4"],
         "--canvas applies only to --estimator densepose, not --estimator oracle"),
        (["build-dsap", "--store", store, "--estimator", "pose-chart", "--config", str(a_file)],
         "--config applies only to --estimator densepose, not --estimator pose-chart"),
        (["build-mpn-priors", "--store", store, "--parsing", "oracle", "--segmentation", "oracle",
          "--test-size", "200"],
         "--test-size applies only to --segmentation maskrcnn, not --parsing oracle --segmentation oracle"),
        (["build-dsap", "--store", store, "--estimator", "densepose", "--device", "gpu"],
         "'gpu' is not a device: use cpu, cuda or cuda:N"),
        (["build-mpn-priors", "--store", store, "--segmentation", "maskrcnn", "--device", "auto"],
         "'auto' is not a device: use cpu, cuda or cuda:N"),
        # flags with a default: a non-default value the chosen backend would silently ignore
        (["build-dsap", "--store", store, "--estimator", "oracle", "--device", "cuda"],
         "--device applies only to --estimator densepose, not --estimator oracle"),
        (["build-dsap", "--store", store, "--estimator", "pose-chart", "--batch-size", "32"],
         "--batch-size applies only to --estimator densepose, not --estimator pose-chart"),
        (["build-dsap", "--store", store, "--estimator", "oracle", "--densepose-head", "all"],
         "--densepose-head applies only to --estimator densepose, not --estimator oracle"),
        (["build-dsap", "--store", store, "--estimator", "pose-chart", "--root", world],
         "--root applies only to --estimator oracle, not --estimator pose-chart"),
        (["build-mpn-priors", "--store", store, "--parsing", "oracle", "--segmentation", "pose", "--device", "cuda"],
         "--device applies only to --parsing onnx or --segmentation maskrcnn, not --parsing oracle "
         "--segmentation pose"),
        (["build-mpn-priors", "--store", store, "--parsing", "pose", "--segmentation", "oracle",
          "--onnx-model", str(a_file)], "--onnx-model applies only to --parsing onnx, not --parsing pose"),
        (["build-mpn-priors", "--store", store, "--parsing", "oracle", "--segmentation", "oracle",
          "--iuv-group", "estimates/oracle"],
         "--iuv-group applies only to --parsing densepose or --segmentation densepose, not --parsing oracle"),
    ]
    for argv, expected in cases:
        line = _fails(pipelines_main, argv, capsys)
        assert expected in line, (argv, line)
    assert not (tmp_path / "s").exists()  # nothing was written by any of them


@pytest.mark.parametrize("argv, expected", [
    (["build-dsap", "--estimator", "densepose", "--device", "cuda:1", "--batch-size", "32", "--densepose-head", "all"],
     {"device": "cuda:1", "batch_size": 32, "densepose_head": "all"}),
    (["build-dsap", "--estimator", "oracle", "--device", "cpu"], {"device": "cpu", "batch_size": None}),  # the default
    (["build-dsap", "--estimator", "oracle", "--densepose-head", "kept"], {"device": "cpu", "densepose_head": "kept"}),
    (["build-mpn-priors", "--parsing", "onnx", "--onnx-model", "A_FILE", "--segmentation", "pose", "--device", "cuda"],
     {"device": "cuda", "onnx_model": "A_FILE"}),
    (["build-mpn-priors", "--parsing", "pose", "--segmentation", "maskrcnn", "--device", "cuda", "--test-size", "200"],
     {"device": "cuda", "test_size": 200}),
    (["build-mpn-priors", "--parsing", "densepose", "--segmentation", "oracle", "--iuv-group", "estimates/x",
      "--root", "ROOT", "--device", "cpu"], {"device": "cpu", "iuv_group": "estimates/x", "root": "ROOT"}),
], ids=["densepose", "dsap-default-device", "dsap-default-head", "onnx", "maskrcnn", "mpn-defaults"])
def test_a_backend_flag_reaches_the_backend_that_uses_it(argv, expected, synthetic_store, tmp_path):
    """The refusals above leave the flags to the backends that use them (and a default given explicitly)."""
    from pipelines import build_dsap, build_mpn
    from pipelines.__main__ import build_parser

    a_file = tmp_path / "model.onnx"
    a_file.write_text("x")
    argv = [str(a_file) if a == "A_FILE" else a for a in argv]
    argv.insert(1, "--store")
    argv.insert(2, str(synthetic_store))
    args = build_parser(argv[0]).parse_args(argv)
    params = (build_dsap if argv[0] == "build-dsap" else build_mpn).flow_params(args)
    expected = {k: str(a_file) if v == "A_FILE" else v for k, v in expected.items()}
    assert {k: params[k] for k in expected} == expected


def test_densepose_sources_without_iuv_is_one_line(pipelines_main, synthetic_world, tmp_path, capsys):
    from pipelines.ingest import ingest_flow

    store = tmp_path / "s"
    ingest_flow(dataset="market1501", root=str(synthetic_world), store=str(store), image_size="64x32",
                unit_size=16, progress=False)
    line = _fails(pipelines_main, ["build-mpn-priors", "--store", str(store), "--parsing", "densepose",
                                   "--segmentation", "oracle"], capsys)
    assert "run build-dsap first" in line


def test_fit_mistakes(fit_main, synthetic_world, synthetic_store, tmp_path, capsys):
    from pipelines.ingest import ingest_flow

    bare = tmp_path / "bare"  # images only: no priors
    ingest_flow(dataset="market1501", root=str(synthetic_world), store=str(bare), image_size="64x32",
                unit_size=16, progress=False)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    run = tmp_path / "run"
    common = ["--run", str(run), "--backbone", "resnet18", "--input-size", "64x32", "--pk", "4", "2",
              "--device", "cpu", "--workers", "0", "-q"]
    store = ["--store", str(synthetic_store)]
    cases = [
        ([*store, *common, "--lr", "nan"], "--lr: must be a finite number >= 0, got nan"),
        ([*store, *common, "--lr", "-1"], "--lr: must be a finite number >= 0, got -1"),
        ([*store, *common, "--max-steps", "-5"], "--max-steps: must be >= 1, got -5"),
        ([*store, *common, "--max-steps", "0"], "--max-steps: must be >= 1, got 0"),
        ([*store, *common, "--workers", "-3"], "--workers: must be >= 0, got -3"),
        ([*store, *common, "--set", "label_smoothing=5"], "label_smoothing must be in [0, 1), got 5.0"),
        ([*store, *common, "--set", "eval_batch_size=0"], "eval_batch_size must be >= 1, got 0"),
        ([*store, *common, "--set", "no_such_field=1"], "unknown config fields ['no_such_field']"),
        ([*store, *common, "--input-size", "0x64"], "each side must be in 1..4096"),
        (["--store", str(a_file), *common], "is not a store (no zarr.json)"),
        (["--store", str(tmp_path / "nope"), *common], "does not exist"),
        ([*store, *common, "--method", "dsa-plus"], "unknown method 'dsa-plus'"),
        ([*store, *common, "--pk", "6", "2"], "P=6 identities per batch but"),
        (["--store", str(bare), *common, "--method", "dsa"], "dsa needs priors/dsap but"),
        (["--store", str(bare), *common, "--method", "mpn"], "python -m pipelines build-mpn-priors --store"),
        ([*common, "--resume"], "holds no run (no config.yaml)"),
        ([*store, *common, "--resume", "--overwrite"], "pass one of them"),
        ([*store, *common, "--pretrained", str(tmp_path / "resnet50.pth")], "resnet50.pth does not exist"),
        ([*store, *common[2:]], "--run RUN_DIR is required"),
    ]
    for argv, expected in cases:
        line = _fails(fit_main, argv, capsys)
        assert expected in line, (argv, line)
        assert not run.exists(), f"{argv} left {list(run.iterdir())}"
    run.mkdir()  # a run killed before its first checkpoint: config.yaml only
    (run / "config.yaml").write_text("method: baseline\n")
    assert "has no checkpoint.pt yet" in _fails(fit_main, [*store, *common, "--resume"], capsys)


def test_evaluate_mistakes(synthetic_store, tmp_path, capsys):
    from reid_train.evaluate import main

    (tmp_path / "empty_run").mkdir()
    line = _fails(main, ["--run", str(tmp_path / "empty_run")], capsys)
    assert "is not a run folder (no config.yaml)" in line
    line = _fails(main, ["--run", str(tmp_path / "nope")], capsys)
    assert "does not exist" in line


@pytest.mark.parametrize("argv, expected", [
    (["-m", "pipelines", "ingest", "--dataset", "market1501", "--root", "/nonexistent/market", "--store", "s"],
     "argument --root: /nonexistent/market does not exist"),
    (["-m", "reid_train.fit", "--store", "/nonexistent/store", "--run", "r"], "/nonexistent/store does not exist"),
    (["-m", "storage", "verify", "--store", "/nonexistent/store"], "/nonexistent/store does not exist"),
], ids=["pipelines", "fit", "storage"])
def test_a_bad_path_is_one_line_from_a_shell(argv, expected, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    out = subprocess.run([sys.executable, *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and expected in out.stderr, out.stderr
