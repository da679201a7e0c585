"""reid_train.extract: the features evaluation scores, from a store split or a folder, to Parquet/Zarr."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from reid_train import extract, fit
from reid_train.engine import extract_features, store_eval_loader
from reid_train.evaluate import load_run
from reid_train.evaluation.metrics import evaluate_features


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory, synthetic_world):
    """The session's synthetic world ingested at 128x64 (no Prefect run needed)."""
    from pipelines.ingest import plan_ingest, write_image_units
    from storage import create_store, image_writer

    index = plan_ingest("market1501", synthetic_world, progress=False)
    path = tmp_path_factory.mktemp("extract") / "store"
    s = create_store(path, dataset="market1501", index=index, image_size=(128, 64),
                     source_root=index.attrs["root"], unit_size=16)
    write_image_units(s.url, index.attrs["root"], [u[0] for u in image_writer(s).pending()])
    return str(path)


@pytest.fixture(scope="module")
def tiny_run(tiny_store, tmp_path_factory):
    """A 3-iteration baseline (ResNet-18, 64x32) that evaluates with flip averaging."""
    run = tmp_path_factory.mktemp("extract_run") / "run"
    assert fit.main(["--method", "baseline", "--store", tiny_store, "--out", str(run), "--backbone", "resnet18",
                     "--size", "64x32", "--pk", "4", "2", "--epochs", "1", "--max-steps", "3", "--workers", "1",
                     "--device", "cpu", "--set", "flip_eval=true", "--set", "last_stride=2",
                     "--set", "eval_batch_size=16", "-q"]) == 0
    return run


def test_split_features_are_the_evaluated_ones(tiny_run, tmp_path):
    summary = json.loads((tiny_run / "metrics.json").read_text())
    assert extract.main(["--run", str(tiny_run), "--out", str(tmp_path / "feats"), "--device", "cpu", "-q"]) == 0
    q, g = (extract.load_features(tmp_path / "feats" / f"{s}.parquet") for s in ("query", "gallery"))
    assert q.features.shape[1] == 512 and q.features.dtype == np.float32
    # scoring the saved features reproduces the training-time evaluation exactly (flip-averaged)
    res = evaluate_features(q.features, g.features, q.pids, g.pids, q.camids, g.camids, metric="cosine",
                            max_rank=min(50, len(g)))
    assert res["mAP"] == pytest.approx(summary["final_eval"]["mAP"], abs=1e-6)
    # and equal the engine's features, image by image, in image_id order
    method = load_run(tiny_run, "cpu")
    ref = extract_features(method, store_eval_loader(method.cfg, method.requires, torch.device("cpu"))("query"),
                           method.cfg, torch.device("cpu"))
    np.testing.assert_array_equal(q.features, ref["features"].numpy())
    assert np.all(np.diff(q.image_ids) > 0) and np.array_equal(q.pids, ref["pids"])
    prov = q.provenance
    assert prov["params"]["flip"] is True and prov["params"]["source"]["split"] == "query"
    assert prov["producer"]["weights_sha256"] and prov["producer"]["step"] == 3
    assert prov["params"]["config"]["method"] == "baseline" and "code_version" in prov
    # without flip averaging the features differ
    noflip = extract.extract_split(tiny_run, "query", flip=False)
    assert noflip.provenance["params"]["flip"] is False
    assert not np.allclose(noflip.features, q.features, atol=1e-4)


def test_folder_matches_store_and_keeps_bad_files(tiny_run, tiny_store, synthetic_world, tmp_path):
    folder = tmp_path / "crops"
    folder.mkdir()
    sources = sorted((synthetic_world / "query").glob("*.jpg"))[:5]
    for p in sources:
        shutil.copy(p, folder / p.name)
    (folder / "broken.jpg").write_bytes(sources[0].read_bytes()[:200])   # truncated JPEG
    fs = extract.extract_folder(tiny_run, folder)
    assert len(fs) == 6 and fs.status.count("ok") == 5
    bad = fs.paths.index(str(folder / "broken.jpg"))
    assert fs.status[bad] == "truncated" and np.isnan(fs.features[bad]).all()
    # decoded + resized as ingest does: the same features as the stored images
    store_q = extract.extract_split(tiny_run, "query")
    by_name = {p.rsplit("/", 1)[-1]: i for i, p in enumerate(store_q.paths)}
    for i, path in enumerate(fs.paths):
        if fs.status[i] == "ok":
            j = by_name[path.rsplit("/", 1)[-1]]
            np.testing.assert_allclose(fs.features[i], store_q.features[j], atol=1e-5)
            assert (fs.pids[i], fs.camids[i]) == (store_q.pids[j], store_q.camids[j])
    assert fs.provenance["params"]["source"]["failed"] == 1

    # round trips: Parquet and Zarr
    for fmt in ("parquet", "zarr"):
        path = extract.save_features(fs, tmp_path / f"crops.{fmt}", fmt)
        back = extract.load_features(path)
        np.testing.assert_array_equal(back.features, fs.features)
        assert back.paths == fs.paths and back.status == fs.status and back.provenance == fs.provenance
        assert np.array_equal(back.pids, fs.pids)
    assert fs.frame().shape == (6, 6)


def test_cli_errors_are_one_line(tiny_run, tmp_path, capsys):
    assert extract.main(["--run", str(tmp_path)]) == 2
    assert extract.main(["--run", str(tiny_run), "--images", str(tmp_path), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "not a run folder" in err[0] and err[1].startswith("error: no image files")


def test_parse_market_name():
    assert extract.parse_market_name("0002_c1s1_000451_03.jpg") == (2, 1)
    assert extract.parse_market_name("-1_c3s2_000001_00.jpg") == (-1, 3)
    assert extract.parse_market_name("person.png") == (-1, -1)


def test_dsa_flip_features_are_the_evaluated_ones(synthetic_store, tmp_path):
    """DSA-reID mirrors its DSAP-images with the image (left/right parts swap): extract scores as training did."""
    run = tmp_path / "dsa"
    assert fit.main(["--method", "dsa", "--store", str(synthetic_store), "--out", str(run), "--backbone", "resnet18",
                     "--size", "64x32", "--pk", "4", "2", "--epochs", "1", "--max-steps", "2", "--workers", "1",
                     "--device", "cpu", "--set", "flip_eval=true", "--set", "eval_batch_size=16", "-q"]) == 0
    final = json.loads((run / "metrics.json").read_text())["final_eval"]
    q, g = (extract.extract_split(run, s) for s in ("query", "gallery"))
    assert q.features.shape[1] == 512 + 8 * 64  # [f_G, f_L] of the MF-Stream
    res = evaluate_features(q.features, g.features, q.pids, g.pids, q.camids, g.camids, metric="euclidean",
                            max_rank=min(50, len(g)))
    assert res["mAP"] == pytest.approx(final["mAP"], abs=1e-6)
