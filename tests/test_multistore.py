"""Training on several stores (``fit --store A --store B``): labels offset per store,
camera ids and pids kept per store, P×K batches drawn across stores; evaluation
on a store the model never trained on (cross-domain)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from reid_train import evaluate, fit
from reid_train.checkpoint import load_checkpoint
from reid_train.data.augment import AugmentConfig
from reid_train.data.loader import StoreUnion, TrainLoader
from storage import open_store


def ingest_world(tmp_path_factory, name: str, ids: int, cameras: int, seed: int, size=(128, 64)) -> str:
    """A synthetic world (``python -m pipelines synth``) ingested without a flow run."""
    from pipelines.ingest import plan_ingest, write_image_units
    from priors.synthetic import write_dataset
    from storage import create_store, image_writer

    folder = tmp_path_factory.mktemp(name)
    write_dataset(folder / "world", ids=ids, images_per_id=4, cameras=cameras, seed=seed, progress=False)
    index = plan_ingest("market1501", folder / "world", progress=False)
    s = create_store(folder / "store", dataset="market1501", index=index, image_size=size,
                     source_root=index.attrs["root"], unit_size=8)
    write = getattr(write_image_units, "fn", write_image_units)  # a Prefect task or a plain job
    write(s.url, index.attrs["root"], [u[0] for u in image_writer(s).pending()])
    return str(folder / "store")


@pytest.fixture(scope="module")
def two_stores(tmp_path_factory) -> tuple[str, str]:
    return (ingest_world(tmp_path_factory, "world_a", ids=8, cameras=2, seed=11),
            ingest_world(tmp_path_factory, "world_b", ids=10, cameras=3, seed=12))


def train_rows(url: str):
    ok = open_store(url).ok_index
    return ok[ok["split"] == "train"].sort_values("image_id")


def test_union_offsets_labels_and_keeps_cameras(two_stores):
    a, b = two_stores
    ra, rb = train_rows(a), train_rows(b)
    ca, cb = int(ra["label"].max()) + 1, int(rb["label"].max()) + 1
    union = StoreUnion([a, b], "train")
    assert len(union) == len(ra) + len(rb)
    assert union.label_offsets == [0, ca]
    # A's rows first with their own labels, then B's shifted past A's identities
    np.testing.assert_array_equal(union.labels, np.concatenate([ra["label"], rb["label"] + ca]))
    assert set(union.labels) == set(range(ca + cb))
    # pids and camids exactly as each store has them (B has a camera A lacks)
    np.testing.assert_array_equal(union.camids, np.concatenate([ra["camid"], rb["camid"]]))
    np.testing.assert_array_equal(union.pids, np.concatenate([ra["pid"], rb["pid"]]))
    assert set(rb["camid"]) - set(ra["camid"])
    # reading a mix of rows returns each store's bytes, in the order asked
    pos = np.array([len(ra) + 3, 1, len(ra), 0])
    raw = union.read(pos)
    want = np.stack([open_store(b).read_images([rb["image_id"].iloc[3]])[0],
                     open_store(a).read_images([ra["image_id"].iloc[1]])[0],
                     open_store(b).read_images([rb["image_id"].iloc[0]])[0],
                     open_store(a).read_images([ra["image_id"].iloc[0]])[0]])
    np.testing.assert_array_equal(raw["images"], want)
    np.testing.assert_array_equal(raw["store_index"], [1, 0, 1, 0])
    np.testing.assert_array_equal(raw["labels"], [rb["label"].iloc[3] + ca, ra["label"].iloc[1],
                                                  rb["label"].iloc[0] + ca, ra["label"].iloc[0]])
    np.testing.assert_array_equal(raw["camids"], [rb["camid"].iloc[3], ra["camid"].iloc[1],
                                                  rb["camid"].iloc[0], ra["camid"].iloc[0]])


def test_pk_batches_draw_identities_from_both_stores(two_stores):
    a, b = two_stores
    loader = TrainLoader([a, b], P=4, K=2, seed=3, workers=1, augment=AugmentConfig().off(), cache=False)
    ca = int(train_rows(a)["label"].max()) + 1
    assert loader.num_classes == ca + int(train_rows(b)["label"].max()) + 1
    seen, mixed = set(), 0
    for batch in loader:
        labels = batch["labels"].numpy()
        ids, counts = np.unique(labels, return_counts=True)
        assert len(ids) == 4 and (counts == 2).all()                    # P identities x K images
        store = batch["store_index"].numpy()
        np.testing.assert_array_equal(store, (labels >= ca).astype(int))  # label ranges never mix stores
        mixed += len(set(store)) == 2
        seen |= set(labels.tolist())
    assert mixed > 0                                   # batches hold identities of both stores
    assert seen == set(range(loader.num_classes))       # one epoch visits every identity of both


def test_stores_of_other_image_sizes_are_refused(two_stores, tmp_path_factory):
    small = ingest_world(tmp_path_factory, "world_small", ids=4, cameras=2, seed=13, size=(64, 32))
    with pytest.raises(ValueError, match="different shapes"):
        StoreUnion([two_stores[0], small], "train")


def test_store_list_in_the_config():
    from reid_train.config import TrainConfig, config_from_dict, train_stores

    one = config_from_dict(TrainConfig, {"store": "s3://bucket/market"})
    assert train_stores(one) == ["s3://bucket/market"]
    both = config_from_dict(TrainConfig, {"store": "stores/c", "stores": ["stores/a", "s3://x/b"]})
    assert both.stores == ("stores/a", "s3://x/b")                 # never split at 'x' or converted
    assert train_stores(both) == ["stores/a", "s3://x/b"] and both.store == "stores/c"  # evaluated elsewhere


def test_fit_on_two_stores_then_evaluate_cross_domain(two_stores, tmp_path):
    a, b = two_stores
    run = tmp_path / "run"
    common = ["--workers", "1", "--device", "cpu", "-q"]
    assert fit.main(["--method", "baseline", "--store", a, "--store", b, "--out", str(run), "--backbone", "resnet18",
                     "--size", "64x32", "--pk", "4", "2", "--epochs", "1", "--max-steps", "2", *common]) == 0
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["stores"] == [a, b] and cfg["store"] == a      # trains on both, evaluates on the first
    n_ids = sum(int(train_rows(s)["label"].max()) + 1 for s in (a, b))
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["num_classes"] == n_ids
    classifier = [v for k, v in ckpt["model"].items() if k.endswith("classifier.weight")]
    assert [w.shape[0] for w in classifier] == [n_ids]       # one logit per identity of the union
    final = json.loads((run / "metrics.json").read_text())["final_eval"]
    assert final["num_valid_queries"] > 0

    # resume keeps the store list
    assert fit.main(["--out", str(run), "--resume", "--max-steps", "3", *common]) == 0
    assert json.loads((run / "metrics.json").read_text())["step"] == 3

    # cross-domain: a model trained on A alone, evaluated on B's query/gallery
    only_a = tmp_path / "only_a"
    assert fit.main(["--method", "baseline", "--store", a, "--out", str(only_a), "--backbone", "resnet18",
                     "--size", "64x32", "--pk", "4", "2", "--epochs", "1", "--max-steps", "1", *common]) == 0
    assert yaml.safe_load((only_a / "config.yaml").read_text())["stores"] == []
    out = tmp_path / "cross.json"
    assert evaluate.main(["--run", str(only_a), "--store", b, "--device", "cpu", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    qb = open_store(b).ok_index
    assert res["store"] == b and res["num_query"] == int((qb["split"] == "query").sum())


def _methods_with_eval_requires() -> list[str]:
    from reid_train.methods import load_all
    from reid_train.methods.base import Method

    return sorted(load_all()) if hasattr(Method, "eval_requires") else []


@pytest.mark.slow
@pytest.mark.skipif(not _methods_with_eval_requires(),
                    reason="evaluation reads every group training read (no Method.eval_requires yet)")
@pytest.mark.parametrize("method", _methods_with_eval_requires() or ["baseline"])
def test_every_method_evaluates_on_a_store_without_priors(method, synthetic_store, two_stores, tmp_path):
    """Trained with priors (the session store has DSAP and MPN priors), tested on a store that has none."""
    bare = two_stores[1]
    assert not open_store(bare).groups
    run = tmp_path / "run"
    assert fit.main(["--method", method, "--store", str(synthetic_store), "--out", str(run), "--backbone",
                     "resnet18", "--size", "128x64", "--pk", "4", "3", "--max-steps", "1",
                     "--workers", "1", "--device", "cpu", "-q"]) == 0
    out = tmp_path / "cross.json"
    assert evaluate.main(["--run", str(run), "--store", bare, "--device", "cpu", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["method"] == method and res["num_gallery"] == int((open_store(bare).ok_index["split"] == "gallery").sum())
    assert 0.0 <= res["plain"]["mAP"] <= 1.0
