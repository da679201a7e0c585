"""The training CLIs on a tiny synthetic store: fit, evaluate (+ re-ranking), resume, refusing an
existing run, --overwrite, model.pt, warnings, cross-store evaluation."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from reid_train import evaluate, fit
from reid_train.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory, synthetic_world):
    """The session's synthetic world ingested at 128x64 (no Prefect run needed)."""
    from pipelines.ingest import plan_ingest, write_image_units
    from storage import create_store, image_writer

    index = plan_ingest("market1501", synthetic_world, progress=False)
    path = tmp_path_factory.mktemp("fit") / "store"
    s = create_store(path, dataset="market1501", index=index, image_size=(128, 64),
                     source_root=index.attrs["root"], unit_size=16)
    write_image_units(s.url, index.attrs["root"], [u[0] for u in image_writer(s).pending()])
    return str(path)


def test_fit_evaluate_resume(tiny_store, tmp_path, capsys):
    run = tmp_path / "run"
    common = ["--workers", "1", "--device", "cpu", "-q"]
    assert fit.main(["--method", "baseline", "--store", tiny_store, "--run", str(run), "--backbone", "resnet18",
                     "--input-size", "64x32", "--pk", "4", "2", "--epochs", "2", "--max-steps", "3",
                     "--set", "log_every=1", "--set", "last_stride=2", *common]) == 0
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert (cfg["method"], cfg["backbone"], cfg["size"], cfg["P"], cfg["K"]) == ("baseline", "resnet18", [64, 32], 4, 2)
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["step"] == 3
    final = summary["final_eval"]
    assert final["num_valid_queries"] > 0 and 0.0 <= final["rank1"] <= 1.0
    assert len(final["cmc"]) >= 5 and final["cmc"] == sorted(final["cmc"])
    assert "rank-1" in capsys.readouterr().out

    assert evaluate.main(["--run", str(run), "--rerank", "--device", "cpu"]) == 0
    res = json.loads((run / "evaluation.json").read_text())
    assert res["method"] == "baseline" and res["feature_dim"] == 512
    # same weights, same features and distance: the CLI reproduces the training-time evaluation
    assert res["plain"]["mAP"] == pytest.approx(final["mAP"], abs=1e-6)
    assert 0.0 <= res["rerank"]["mAP"] <= 1.0 and (run / "cmc_evaluation.png").is_file()

    # resume from the run's own config, with a later stop
    assert fit.main(["--out", str(run), "--resume", "--max-steps", "5", *common]) == 0
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["step"] == 5
    rows = (run / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4", "5"]

    # the real loader (threads, augmentation) resumes exactly: same weights as 5 iterations in one go
    full = tmp_path / "full"
    assert fit.main(["--config", str(run / "config.yaml"), "--out", str(full), "--max-steps", "5", *common]) == 0
    a = load_checkpoint(run / "checkpoint.pt")["model"]
    b = load_checkpoint(full / "checkpoint.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


TINY = ["--backbone", "resnet18", "--input-size", "64x32", "--pk", "4", "2", "--epochs", "2", "--workers", "0",
        "--device", "cpu", "--set", "log_every=1"]


def test_existing_run_is_refused_and_overwrite_leaves_nothing_of_it(tiny_store, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(Path(tiny_store).parent)
    store = Path(tiny_store).name                                   # typed relative to the working directory
    run = tmp_path / "run"
    assert fit.main(["--store", store, "--run", str(run), "--max-steps", "2", *TINY]) == 0
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["store"] == str(Path(tiny_store).resolve())        # recorded absolute
    assert "random weights" in caplog.text and "inside the warm-up" in caplog.text
    model = torch.load(run / "model.pt", weights_only=True)
    assert set(model) == {"method", "num_classes", "model"}         # no optimiser, no RNG
    assert (run / "model.pt").stat().st_size < 0.6 * (run / "checkpoint.pt").stat().st_size
    ckpt = load_checkpoint(run / "checkpoint.pt")["model"]
    assert all(torch.equal(model["model"][k], ckpt[k]) for k in ckpt)

    with pytest.raises(ValueError, match="already holds a run; pass --resume to continue it or --overwrite"):
        fit.main(["--store", store, "--run", str(run), "--max-steps", "1", *TINY])
    (run / "evaluation.json").write_text("{}")                     # what an old evaluation left
    (run / "tb" / "stale.tfevents").write_text("x")
    assert fit.main(["--store", store, "--run", str(run), "--max-steps", "1", "--overwrite", *TINY]) == 0
    assert not (run / "evaluation.json").exists() and not (run / "tb" / "stale.tfevents").exists()
    assert len(list((run / "tb").iterdir())) == 1
    assert json.loads((run / "metrics.json").read_text())["step"] == 1


def test_evaluate_reads_only_the_groups_the_test_features_need(synthetic_store, tiny_store, tmp_path):
    """A DSA run trained with priors evaluates on a store without any (cross-domain)."""
    run = tmp_path / "dsa"
    assert fit.main(["--method", "dsa", "--store", str(synthetic_store), "--run", str(run), "--max-steps", "1",
                     "--set", "dsag_widths=[8,16,16,32]", "-q", *TINY]) == 0
    other = tmp_path / "eval_other"
    assert evaluate.main(["--run", str(run), "--store", tiny_store, "--device", "cpu", "--out", str(other)]) == 0
    res = json.loads((other / "evaluation.json").read_text())
    assert res["store"] == str(Path(tiny_store).resolve()) and res["num_query"] > 0
    assert (other / "cmc_evaluation.png").is_file()
    # the same run evaluated from another working directory finds its store (absolute path recorded)
    assert evaluate.main(["--run", str(run), "--device", "cpu"]) == 0


def test_losses_png_shows_a_single_logged_point(tmp_path):
    """One metrics row (a 1-iteration run) still draws a visible point in every panel."""
    import matplotlib.image as mpimg
    import numpy as np

    from reid_train.plots import plot_losses

    csv = tmp_path / "metrics.csv"
    csv.write_text("step,epoch,lr,id,triplet,total,images_per_s\n1,0.5,0.00035,6.1,0.4,6.5,12.0\n")
    png = plot_losses(csv, tmp_path / "losses.png")
    rgb = mpimg.imread(png)[..., :3]
    blue = np.array([0.122, 0.467, 0.706])  # tab:blue, the loss curves
    red = np.array([0.839, 0.153, 0.157])   # tab:red, the learning rate
    assert (np.abs(rgb - blue).max(axis=-1) < 0.05).sum() > 3 * 20   # three loss panels, a marker each
    assert (np.abs(rgb - red).max(axis=-1) < 0.05).sum() > 20
