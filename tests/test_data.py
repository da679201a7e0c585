"""Streaming loader: right pixels for the claimed ids, missing groups, priors moved with the image."""
import gc
import os
import signal
import threading
import time
from itertools import islice

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings, strategies as st

from priors.dsap import flip_dsap
from reid_train.data import loader as data_mod
from reid_train.data.augment import (AugmentConfig, AugmentParams, augment_batch, flip_dsap_torch, model_images,
                                sample_params, translate_flip)
from reid_train.data.loader import EvalLoader, MissingGroupError, StoreDataset, TrainLoader, read_spans
from storage import create_store, group_writer, image_writer, make_provenance

H, W = 128, 64          # store image size
FH, FW = 8, 4           # MPN feature map of 128x64 at stride 16
S = 4                   # DSAP side
UNIT = 8
MEAN = torch.tensor(AugmentConfig().mean).view(1, 3, 1, 1)
STD = torch.tensor(AugmentConfig().std).view(1, 3, 1, 1)


def _world():
    """Index + arrays of a small store: train ids with 1..9 images, query, gallery."""
    rng = np.random.default_rng(0)
    rows = []
    train_counts = [5, 1, 9, 3, 7, 2, 6, 8]
    for label, n in enumerate(train_counts):
        rows += [("train", 100 + label, c % 3, label) for c in range(n)]
    rows += [("query", 200 + p, 0, -1) for p in range(4)]
    rows += [("gallery", 200 + p % 4, 1 + p % 2, -1) for p in range(11)]
    n = len(rows)
    idx = pd.DataFrame(rows, columns=["split", "pid", "camid", "label"])
    idx.insert(0, "image_id", np.arange(n, dtype=np.int64))
    idx.insert(1, "dataset", "toy")
    idx["relpath"] = [f"{s}/{i:04d}.jpg" for i, s in enumerate(idx["split"])]
    idx["orig_height"], idx["orig_width"] = H, W
    idx["sha256"], idx["status"], idx["reason"] = "", "ok", ""
    images = rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8)
    dsap = rng.integers(0, 256, (n, 24, 3, S, S), dtype=np.uint8)
    valid = rng.random((n, 24, S, S)) < 0.6
    mask = (rng.random((n, FH, FW)) < 0.5).astype(np.uint8)
    mask[:, 0] = 0                                   # a free top row so shifts are visible
    rowsfg = mask.any(axis=2)
    roi = np.stack([rowsfg.argmax(1), FH - 1 - rowsfg[:, ::-1].argmax(1)], 1).astype(np.int16)
    fallback = np.zeros(n, bool)
    fallback[::5] = True
    roi[fallback] = (0, FH - 1)
    mask[::10] = 1                                   # all-ones fallback masks
    arrays = {"images": images, "dsap": dsap, "valid": valid, "mask": mask, "roi": roi, "fallback": fallback}
    return idx, arrays


def _build(path, idx, arrays, groups=True):
    s = create_store(path, dataset="toy", index=idx, image_size=(H, W), source_root=str(path), unit_size=UNIT)
    w = image_writer(s)
    for k, a, b in s.units():
        w.write_unit(k, {"images": arrays["images"][a:b]})
    if groups:
        prov = make_provenance({"name": "test", "version": "1"}, params={"S": S})
        gw = group_writer(s, "priors/dsap", {"dsap": ((24, 3, S, S), "uint8"), "valid": ((24, S, S), "bool")}, prov)
        for k, a, b in s.units():
            gw.write_unit(k, {"dsap": arrays["dsap"][a:b], "valid": arrays["valid"][a:b]})
        prov = make_provenance({"name": "test", "version": "1"}, params={"input_size": [H, W], "stride": 16})
        gw = group_writer(s, "priors/mpn", {"mask": ((FH, FW), "uint8"), "roi": ((2,), "int16"),
                                            "fallback": ((), "bool")}, prov)
        for k, a, b in s.units():
            gw.write_unit(k, {n: arrays[n][a:b] for n in ("mask", "roi", "fallback")})
    return str(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    idx, arrays = _world()
    root = tmp_path_factory.mktemp("stores")
    return {"idx": idx, "arrays": arrays, "store": _build(root / "full", idx, arrays),
            "bare": _build(root / "bare", idx, arrays, groups=False)}


def _normalised(u8_nhwc):
    return (torch.as_tensor(u8_nhwc).permute(0, 3, 1, 2).float() / 255 - MEAN) / STD


# ---------------------------------------------------------------- reading

@pytest.mark.parametrize("mode", ["stream", "cache", "whole"])
def test_dataset_reads_the_rows_it_claims(world, monkeypatch, mode):
    if mode != "whole":
        monkeypatch.setattr(data_mod, "SMALL_ARRAY_BYTES", 0)
    ds = StoreDataset(world["store"], "train", requires=("priors/dsap", "priors/mpn"), cache=(mode == "cache"))
    idx, arr = world["idx"], world["arrays"]
    train = idx[idx["split"] == "train"]
    assert len(ds) == len(train)
    rng = np.random.default_rng(1)
    for _ in range(3):
        pos = rng.choice(len(ds), 12, replace=True)
        b = ds.read(pos)
        ids = train["image_id"].to_numpy()[pos]
        assert np.array_equal(b["image_ids"], ids)
        assert np.array_equal(b["images"], arr["images"][ids])
        assert np.array_equal(b["dsap"], arr["dsap"][ids]) and np.array_equal(b["dsap_valid"], arr["valid"][ids])
        assert np.array_equal(b["mpn_mask"], arr["mask"][ids]) and np.array_equal(b["mpn_roi"], arr["roi"][ids])
        assert np.array_equal(b["mpn_fallback"], arr["fallback"][ids])
        assert np.array_equal(b["labels"], train["label"].to_numpy()[pos])
        assert np.array_equal(b["pids"], train["pid"].to_numpy()[pos])
        assert np.array_equal(b["camids"], train["camid"].to_numpy()[pos])
    one = ds[3]
    assert np.array_equal(one["images"], arr["images"][train["image_id"].to_numpy()[3]])


@settings(max_examples=60, deadline=None)
@given(ids=st.lists(st.integers(0, 200), min_size=1, max_size=40), unit=st.sampled_from([1, 4, 8, 32]))
def test_read_spans_cover_rows_and_never_skip_a_chunk(ids, unit):
    ids = np.array(ids)
    spans = read_spans(ids, unit)
    served = np.concatenate([pos for _, _, pos in spans])
    assert sorted(served.tolist()) == list(range(len(ids)))
    for a, b, pos in spans:
        assert a <= ids[pos].min() and ids[pos].max() == b - 1 and ids[pos].min() == a
        needed = set((ids[pos] // unit).tolist())
        assert set(range(a // unit, (b - 1) // unit + 1)) == needed   # every chunk decoded is needed
    # one call per group of chunks separated by a gap of >= 1 unneeded chunk
    chunks = np.unique(ids // unit)
    assert len(spans) == 1 + int(np.sum(np.diff(chunks) > 1))


def test_missing_group_error_says_what_to_run(world):
    with pytest.raises(MissingGroupError, match=r"MPN needs priors/mpn: run build-mpn-priors first"):
        StoreDataset(world["bare"], "train", requires=("priors/mpn",))
    with pytest.raises(MissingGroupError, match=r"DSA-reID needs priors/dsap: run build-dsap first"):
        TrainLoader(world["bare"], 2, 2, requires=("priors/dsap",))
    with pytest.raises(ValueError, match="no batch keys"):
        StoreDataset(world["store"], "train", requires=("estimates/oracle",))


def test_mpn_size_mismatch_fails_clearly(world):
    with pytest.raises(ValueError, match=r"8x4 feature-map masks made for input 128x64.*--input-size 192x64"):
        TrainLoader(world["store"], 2, 2, size=(192, 64), requires=("priors/mpn",))


# ---------------------------------------------------------------- loaders

def test_train_loader_unaugmented_pixels_and_pk(world):
    loader = TrainLoader(world["store"], P=3, K=2, requires=("priors/dsap", "priors/mpn"), seed=4,
                         augment=AugmentConfig().off(), cache=False)
    arr = world["arrays"]
    assert len(loader) == loader.sampler.batches_per_epoch and loader.num_classes == 8
    batches = list(loader)
    assert len(batches) == len(loader) and loader.step == len(loader)
    for b in batches:
        ids = b["image_ids"].numpy()
        assert b["images"].shape == (6, 3, H, W) and b["images"].dtype == torch.float32
        torch.testing.assert_close(b["images"], _normalised(arr["images"][ids]), rtol=0, atol=1e-5)
        lab = b["labels"].view(3, 2)
        assert (lab == lab[:, :1]).all() and len(set(lab[:, 0].tolist())) == 3
        assert torch.equal(b["mpn_mask"], torch.from_numpy(arr["mask"][ids]).float())
        assert b["mpn_roi"].dtype == torch.long and torch.equal(b["mpn_roi"], torch.from_numpy(arr["roi"][ids]).long())
        dsap = (torch.from_numpy(arr["dsap"][ids]).float() / 255 - MEAN.view(1, 1, 3, 1, 1)) / STD.view(1, 1, 3, 1, 1)
        torch.testing.assert_close(b["dsap"], dsap, rtol=0, atol=1e-5)
        assert b["dsap_valid"].dtype == torch.bool
    # the next iter() is the next epoch, continuing the same stream
    nxt = next(iter(loader))
    ref = next(iter(TrainLoader(world["store"], 3, 2, seed=4, augment=AugmentConfig().off(), start_step=len(loader))))
    assert torch.equal(nxt["image_ids"], ref["image_ids"])


def test_train_loader_deterministic_and_ddp_union(world):
    kw = dict(P=4, K=2, requires=("priors/dsap", "priors/mpn"), seed=11)
    single = list(islice(TrainLoader(world["store"], **kw), 4))
    again = list(islice(TrainLoader(world["store"], workers=1, cache=False, **kw), 4))
    ranks = [list(islice(TrainLoader(world["store"], rank=r, world_size=2, **kw), 4)) for r in range(2)]
    for j in range(4):
        for key in single[j]:
            assert torch.equal(single[j][key], again[j][key]), key
            union = torch.cat([ranks[0][j][key], ranks[1][j][key]])
            assert torch.equal(union, single[j][key]), key
    resumed = next(iter(TrainLoader(world["store"], start_step=2, **kw)))
    assert all(torch.equal(resumed[k], single[2][k]) for k in resumed)
    # an augmented batch is augment_batch of the store rows it claims, with the step's parameters
    loader, arr = TrainLoader(world["store"], **kw), world["arrays"]
    ids = single[1]["image_ids"].numpy()
    raw = {"images": torch.from_numpy(arr["images"][ids]), "dsap": torch.from_numpy(arr["dsap"][ids]),
           "dsap_valid": torch.from_numpy(arr["valid"][ids]), "mpn_mask": torch.from_numpy(arr["mask"][ids]),
           "mpn_roi": torch.from_numpy(arr["roi"][ids]), "mpn_fallback": torch.from_numpy(arr["fallback"][ids])}
    expect = augment_batch(raw, AugmentConfig(), params=loader.params(1))
    assert loader.params(1).flip.any() and loader.params(1).shift.any()
    for k in raw:
        assert torch.equal(expect[k], single[1][k]), k
    # the GPU flow (workers only read; the main thread copies and augments) gives the same batches
    main = TrainLoader(world["store"], **kw)
    main.augment_in_workers = False
    for j, b in enumerate(islice(main, 4)):
        assert all(torch.equal(b[k], single[j][k]) for k in b)


def test_eval_loader_in_image_id_order(world):
    ev = EvalLoader(world["store"], "gallery", batch_size=4, requires=("priors/mpn",))
    idx, arr = world["idx"], world["arrays"]
    gal = idx[idx["split"] == "gallery"]
    batches = list(ev)
    assert len(batches) == len(ev) == 3 and [len(b["image_ids"]) for b in batches] == [4, 4, 3]
    ids = torch.cat([b["image_ids"] for b in batches]).numpy()
    assert np.array_equal(ids, gal["image_id"].to_numpy())
    imgs = torch.cat([b["images"] for b in batches])
    torch.testing.assert_close(imgs, _normalised(arr["images"][ids]), rtol=0, atol=1e-5)
    assert (torch.cat([b["labels"] for b in batches]) == -1).all()
    assert torch.equal(torch.cat([b["mpn_mask"] for b in batches]), torch.from_numpy(arr["mask"][ids]).float())


def _loader_threads() -> set:
    return {t for t in threading.enumerate() if t.name.startswith("reid-loader")}


def _ids(batches) -> list:
    return [b["image_ids"].tolist() for b in batches]


def _join(threads) -> bool:
    """True when all ``threads`` have ended (within 10 s each)."""
    for t in threads:
        t.join(timeout=10)
    return not any(t.is_alive() for t in threads)


def test_train_loader_keeps_its_threads_across_epochs_and_lets_them_go(world):
    kw = dict(P=3, K=2, seed=4, augment=AugmentConfig().off(), cache=False, workers=2)
    before = _loader_threads()
    loader = TrainLoader(world["store"], **kw)
    assert len(list(loader)) == len(loader)
    mine = _loader_threads() - before
    assert 1 <= len(mine) <= 2
    assert len(list(loader)) == len(loader)
    assert _loader_threads() - before == mine  # the second epoch was read by the same threads
    # an epoch abandoned after one batch: the next iter() goes on from there, on the same threads
    it = iter(loader)
    first = next(it)
    it.close()
    rest = list(loader)
    assert _loader_threads() - before == mine
    assert _ids([first, *rest]) == _ids(TrainLoader(world["store"], start_step=2 * len(loader), **kw))
    loader.close()
    assert _join(mine)
    assert _ids(loader) == _ids(TrainLoader(world["store"], start_step=3 * len(loader), **kw))  # new threads
    loader.close()
    gc.collect()
    assert _join(_loader_threads() - before)  # the closed loader's and the dropped references' threads
    # a loader dropped mid-epoch takes its threads with it
    dropped = TrainLoader(world["store"], **kw)
    assert len(list(islice(dropped, 2))) == 2
    theirs = _loader_threads() - before
    assert theirs
    del dropped
    gc.collect()
    assert _join(theirs)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_reads_with_threads_of_its_own(world):
    """The child's copy of the pool has no threads: it must make its own, not wait on the parent's."""
    kw = dict(P=3, K=2, seed=4, augment=AugmentConfig().off(), cache=False, workers=2)
    loader = TrainLoader(world["store"], **kw)
    list(loader)  # the parent's pool and threads exist
    second_epoch = _ids(TrainLoader(world["store"], start_step=len(loader), **kw))
    pid = os.fork()
    if pid == 0:  # the child: read the next epoch, exit at once (no pytest teardown)
        code = 1
        try:
            torch.set_num_threads(1)  # as torch's DataLoader does in a forked worker
            code = 0 if _ids(loader) == second_epoch else 3
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung reading an epoch")
    assert os.waitstatus_to_exitcode(status) == 0
    assert _ids(loader) == second_epoch  # the parent's threads still serve the parent


def test_resize_to_training_size(world):
    ev = EvalLoader(world["store"], "query", batch_size=8, size=(192, 64))
    b = next(iter(ev))
    assert b["images"].shape == (4, 3, 192, 64)
    flat = torch.full((1, H, W, 3), 77, dtype=torch.uint8)
    out = augment_batch({"images": flat}, AugmentConfig().off(), size=(192, 96))["images"]
    torch.testing.assert_close(out, _normalised(torch.full((1, 192, 96, 3), 77, dtype=torch.uint8)))


# ---------------------------------------------------------------- augmentation

def _naive_augment(images, params, cfg):
    """Per-sample, per-step reference: flip, zero-pad, crop, normalise, erase."""
    out = []
    for b in range(images.shape[0]):
        x = images[b].numpy()
        if params.flip[b]:
            x = x[:, ::-1]
        p = cfg.pad
        xp = np.zeros((H + 2 * p, W + 2 * p, 3), np.uint8)
        xp[p:p + H, p:p + W] = x
        oy, ox = (p - params.shift[b]).tolist()
        x = xp[oy:oy + H, ox:ox + W]
        t = _normalised(x[None].copy())[0]
        y0, x0, h, w = params.erase[b].tolist()
        if h:
            g = torch.Generator().manual_seed(int(params.fill_seed[b]))
            vals = torch.empty((3, h, w)).uniform_(0, 255, generator=g)
            t[:, y0:y0 + h, x0:x0 + w] = (vals / 255 - MEAN[0]) / STD[0]
        out.append(t)
    return torch.stack(out)


def test_augment_matches_naive_reference(world):
    cfg = AugmentConfig(erase_p=0.7)
    images = torch.from_numpy(world["arrays"]["images"][:24])
    params = sample_params(24, (H, W), cfg, torch.Generator().manual_seed(3))
    assert params.flip.any() and (~params.flip).any() and (params.erase[:, 2] > 0).any()
    out = augment_batch({"images": images}, cfg, params=params)["images"]
    torch.testing.assert_close(out, _naive_augment(images, params, cfg), rtol=0, atol=1e-5)
    # same generator seed -> same batch
    again = augment_batch({"images": images}, cfg, torch.Generator().manual_seed(3))["images"]
    assert torch.equal(out, again)


def test_cpu_slices_equal_the_vectorised_gather(world):
    cfg = AugmentConfig(erase_p=0.0)
    images = torch.from_numpy(world["arrays"]["images"][:16])
    params = sample_params(16, (H, W), cfg, torch.Generator().manual_seed(8))
    gathered = translate_flip(images, params.flip, params.shift)
    torch.testing.assert_close(model_images(images, params, cfg), _normalised(gathered), rtol=0, atol=1e-5)
    # the gather itself against the naive per-sample reference
    torch.testing.assert_close(_normalised(gathered), _naive_augment(images, params, cfg), rtol=0, atol=1e-5)


def test_device_code_path_equals_cpu_path(world, monkeypatch):
    """The GPU path (one gather, torch ops, flip_dsap_torch) run on CPU tensors gives the CPU path's batch."""
    from reid_train.data import augment as aug_mod

    ds = StoreDataset(world["store"], "train", requires=("priors/dsap", "priors/mpn"))
    raw = {k: torch.from_numpy(v) for k, v in ds.read(np.arange(20)).items()}
    cfg = AugmentConfig(erase_p=0.8)
    params = sample_params(20, (H, W), cfg, torch.Generator().manual_seed(12))
    assert params.flip.any() and params.shift.any() and (params.erase[:, 2] > 0).any()
    cpu = augment_batch(raw, cfg, params=params)
    monkeypatch.setattr(aug_mod, "FORCE_DEVICE_PATH", True)
    dev = augment_batch(raw, cfg, params=params)
    assert cpu.keys() == dev.keys()
    for k in cpu:
        assert cpu[k].dtype == dev[k].dtype, k
        torch.testing.assert_close(cpu[k], dev[k], rtol=0, atol=1e-5, msg=k)


def test_erase_with_mean_colour():
    cfg = AugmentConfig(erase_fill="mean")
    img = torch.full((1, H, W, 3), 200, dtype=torch.uint8)
    params = AugmentParams(torch.tensor([False]), torch.zeros(1, 2, dtype=torch.long),
                           torch.tensor([[5, 6, 20, 10]]), torch.zeros(1, dtype=torch.long))
    out = augment_batch({"images": img}, cfg, params=params)["images"][0]
    assert torch.allclose(out[:, 5:25, 6:16], torch.zeros(()), atol=1e-6)     # the mean is 0 after normalising
    outside = out.clone()
    outside[:, 5:25, 6:16] = _normalised(img)[0, :, :20, :10]
    torch.testing.assert_close(outside, _normalised(img)[0])
    with pytest.raises(ValueError, match="erase_fill"):
        AugmentConfig(erase_fill="noise")


def test_erasing_rectangles_follow_zhong_et_al():
    cfg = AugmentConfig()
    p = sample_params(4000, (256, 128), cfg, torch.Generator().manual_seed(0))
    y, x, h, w = p.erase.T
    on = h > 0
    assert 0.45 < on.float().mean() < 0.55                     # p = 0.5
    assert ((y + h <= 256) & (x + w <= 128))[on].all()         # rectangles fit
    frac = (h * w).double()[on] / (256 * 128)
    assert frac.min() > 0.015 and frac.max() < 0.42            # s_l = 0.02, s_h = 0.4 (+ rounding)
    aspect = h.double()[on] / w.double()[on]
    assert aspect.min() > 0.27 and aspect.max() < 1 / 0.27     # r in [0.3, 1/0.3] (+ rounding)
    assert (p.shift.abs() <= 10).all() and set(p.shift.unique().tolist()) == set(range(-10, 11))


def test_flip_dsap_torch_equals_priors_flip_dsap(world):
    d, v = world["arrays"]["dsap"][:5], world["arrays"]["valid"][:5]
    rd, rv = flip_dsap(d, v)
    td, tv = flip_dsap_torch(torch.from_numpy(d), torch.from_numpy(v))
    assert np.array_equal(td.numpy(), rd) and np.array_equal(tv.numpy(), rv)


def _prior_batch(mask, roi, fallback, B):
    rng = np.random.default_rng(5)
    return {
        "images": torch.zeros(B, H, W, 3, dtype=torch.uint8),
        "dsap": torch.from_numpy(rng.integers(0, 256, (B, 24, 3, S, S), dtype=np.uint8)),
        "dsap_valid": torch.from_numpy(rng.random((B, 24, S, S)) < 0.5),
        "mpn_mask": torch.as_tensor(mask, dtype=torch.uint8), "mpn_roi": torch.as_tensor(roi, dtype=torch.int16),
        "mpn_fallback": torch.as_tensor(fallback),
    }


def test_flip_moves_mask_and_permutes_dsap():
    mask = np.zeros((2, FH, FW), np.uint8)
    mask[:, 2:6, 0] = 1                                 # person on the left column only
    batch = _prior_batch(mask, [[2, 5], [2, 5]], [False, False], 2)
    params = AugmentParams(torch.tensor([True, False]), torch.zeros(2, 2, dtype=torch.long),
                           torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    out = augment_batch(batch, AugmentConfig(), params=params)
    expect = np.zeros((FH, FW), np.float32)
    expect[2:6, FW - 1] = 1
    assert np.array_equal(out["mpn_mask"][0].numpy(), expect)            # flipped
    assert np.array_equal(out["mpn_mask"][1].numpy(), mask[1])           # untouched
    assert out["mpn_roi"].tolist() == [[2, 5], [2, 5]]
    rd, rv = flip_dsap(batch["dsap"][:1].numpy(), batch["dsap_valid"][:1].numpy())
    dsap0 = (torch.from_numpy(rd).float() / 255 - MEAN.view(1, 1, 3, 1, 1)) / STD.view(1, 1, 3, 1, 1)
    torch.testing.assert_close(out["dsap"][:1], dsap0, rtol=0, atol=1e-5)
    assert torch.equal(out["dsap_valid"][:1], torch.from_numpy(rv))
    assert torch.equal(out["dsap_valid"][1], batch["dsap_valid"][1])
    # part 14 (0-based) is paired with part 15 by FLIP_PERMUTATION (p ^ 1): they swap
    assert torch.equal(out["dsap_valid"][0, 14], batch["dsap_valid"][0, 15])


@pytest.mark.parametrize("dy,dx,cy,cx", [(10, 0, 1, 0), (7, 0, 0, 0), (8, -9, 1, -1), (-10, 10, -1, 1), (-8, 3, -1, 0)])
def test_crop_shifts_mask_by_rounded_cells(dy, dx, cy, cx):
    mask = np.zeros((3, FH, FW), np.uint8)
    mask[:, 1:7, 1:3] = 1
    mask[2] = 1                                         # all-ones fallback mask
    roi = [[1, 6], [1, 6], [0, FH - 1]]
    batch = _prior_batch(mask, roi, [False, True, True], 3)
    params = AugmentParams(torch.zeros(3, dtype=torch.bool), torch.tensor([[dy, dx]] * 3),
                           torch.zeros(3, 4, dtype=torch.long), torch.zeros(3, dtype=torch.long))
    out = augment_batch(batch, AugmentConfig(), params=params)
    expect = np.zeros((FH, FW), np.float32)
    expect[1 + cy:7 + cy, 1 + cx:3 + cx] = 1
    assert np.array_equal(out["mpn_mask"][0].numpy(), expect)
    assert out["mpn_roi"][0].tolist() == [1 + cy, 6 + cy]
    assert np.array_equal(out["mpn_mask"][1].numpy(), expect)      # fallback: the mask moves...
    assert out["mpn_roi"][1].tolist() == [1, 6]                     # ...its whole-map ROI does not
    assert (out["mpn_mask"][2] == 1).all() and out["mpn_roi"][2].tolist() == [0, FH - 1]
    # the image moved by exactly (dy, dx) pixels
    img = torch.zeros(1, H, W, 1, dtype=torch.uint8)
    img[0, 40, 20] = 1
    moved = translate_flip(img, torch.tensor([False]), torch.tensor([[dy, dx]]))
    assert moved[0, 40 + dy, 20 + dx, 0] == 1 and moved.sum() == 1


def test_roi_clipped_at_the_border():
    mask = np.zeros((1, FH, FW), np.uint8)
    mask[0, 0:FH, 1] = 1
    batch = _prior_batch(mask, [[0, FH - 1]], [False], 1)
    params = AugmentParams(torch.tensor([False]), torch.tensor([[10, 0]]), torch.zeros(1, 4, dtype=torch.long),
                           torch.zeros(1, dtype=torch.long))
    out = augment_batch(batch, AugmentConfig(), params=params)
    assert out["mpn_roi"].tolist() == [[1, FH - 1]]
    assert out["mpn_mask"][0, 0].sum() == 0 and out["mpn_mask"][0, 1:, 1].all()
