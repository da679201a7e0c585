"""Training engine on fake loaders: logging, outputs, bit-exact resume, DDP (gloo)."""
from __future__ import annotations

import csv
import functools
import json
import os
import socket

import numpy as np
import pytest
import torch

from reid_train.checkpoint import load_checkpoint
from reid_train.engine import Data, train
from reid_train.methods import get_method

NUM_CLASSES = 6
SIZE = (32, 16)


def _templates() -> torch.Tensor:
    """One fixed random image per identity: learnable structure."""
    g = torch.Generator().manual_seed(1234)
    return torch.randn(NUM_CLASSES, 3, *SIZE, generator=g)


class FakeTrainLoader:
    """Infinite P x K batches whose content depends only on (seed, step, rank):
    what the real TrainLoader promises for exact resume."""

    def __init__(self, P, K, seed, start_step, steps_per_epoch, rank=0, world_size=1):
        self.P, self.K, self.seed, self.start = P, K, seed, start_step
        self.steps_per_epoch, self.rank, self.world = steps_per_epoch, rank, world_size
        self.templates = _templates()

    def __len__(self):
        return self.steps_per_epoch

    def batch(self, step):
        g = torch.Generator().manual_seed(self.seed * 100_003 + step)
        ids = torch.randperm(NUM_CLASSES, generator=g)[: self.P].repeat_interleave(self.K)
        images = self.templates[ids] + 0.5 * torch.randn(len(ids), 3, *SIZE, generator=g)
        n = len(ids) // self.world
        sl = slice(self.rank * n, (self.rank + 1) * n)
        ids = ids[sl]
        return {"images": images[sl], "labels": ids, "pids": ids + 100, "camids": torch.zeros_like(ids),
                "image_ids": torch.arange(len(ids)) + step * 1000}

    def __iter__(self):
        step = self.start
        while True:
            yield self.batch(step)
            step += 1


def fake_eval(split, batch_size=8):
    g = torch.Generator().manual_seed(7 if split == "query" else 8)
    pids = torch.arange(NUM_CLASSES).repeat(1 if split == "query" else 3)
    images = _templates()[pids] + 0.5 * torch.randn(len(pids), 3, *SIZE, generator=g)
    cam = 0 if split == "query" else 1
    for s in range(0, len(pids), batch_size):
        p = pids[s:s + batch_size]
        yield {"images": images[s:s + batch_size], "pids": p + 100, "camids": torch.full_like(p, cam),
               "labels": torch.full_like(p, -1), "image_ids": torch.arange(len(p))}


def fake_data(cfg, requires, dist, start_step, steps_per_epoch=4, evaluate=True):
    loader = FakeTrainLoader(cfg.P, cfg.K, cfg.seed, start_step, steps_per_epoch, dist.rank, dist.world_size)
    return Data(loader, NUM_CLASSES, fake_eval if evaluate else None)


def small_cfg(**kw):
    cls = get_method("baseline").Config
    base = dict(backbone="resnet18", last_stride=2, size=SIZE, P=4, K=2, epochs=3, warmup_epochs=1,
                milestones=(2,), lr=1e-3, log_every=1, threads=1, device="cpu", workers=0)
    base.update(kw)
    return cls(**base)


def test_run_logs_losses_and_writes_outputs(tmp_path):
    cfg = small_cfg(epochs=2, eval_every=1)
    threads = torch.get_num_threads()
    res = train(cfg, tmp_path, data_factory=fake_data)
    assert torch.get_num_threads() == threads  # restored
    assert res.step == 8
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    assert {"id", "triplet", "total", "lr"} <= set(rows[0])
    for r in rows:  # total is the sum of the named losses
        assert float(r["total"]) == pytest.approx(float(r["id"]) + float(r["triplet"]), rel=1e-5)
    # CE with label smoothing starts near log(C) with a near-zero classifier
    assert float(rows[0]["id"]) == pytest.approx(np.log(NUM_CLASSES), abs=0.05)
    # warm-up: lr grows over the first epoch (4 iterations), then stays
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[0] < lrs[1] < lrs[2] < lrs[3] == pytest.approx(1e-3)
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["step"] == 8 and len(summary["eval_history"]) == 2
    final = summary["final_eval"]
    assert 0.0 <= final["mAP"] <= 1.0 and final["num_valid_queries"] == NUM_CLASSES
    for name in ("config.yaml", "checkpoint.pt", "losses.png", "cmc.png", "eval.png"):
        assert (tmp_path / name).is_file(), name
    assert any((tmp_path / "tb").iterdir())
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")  # weights_only=True
    assert ckpt["step"] == 8 and ckpt["method"] == "baseline"


def _state(method):
    return {k: v.detach().clone() for k, v in method.state_dict().items()}


def test_resume_is_bit_exact(tmp_path):
    data = functools.partial(fake_data, evaluate=False)
    full = train(small_cfg(max_steps=7), tmp_path / "full", data_factory=data)
    part = train(small_cfg(max_steps=3), tmp_path / "part", data_factory=data)
    assert part.step == 3
    rest = train(small_cfg(max_steps=7), tmp_path / "part", resume=True, data_factory=data)
    assert rest.step == 7
    a, b = _state(full.method), _state(rest.method)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the weights did change, and the CSV of the resumed run equals the full one
    assert not torch.equal(a["neck.classifier.weight"], _state(part.method)["neck.classifier.weight"])
    rows = lambda p: [(r["step"], r["total"]) for r in csv.DictReader((p / "metrics.csv").open())]  # noqa: E731
    assert rows(tmp_path / "full") == rows(tmp_path / "part")
    ca, cb = load_checkpoint(tmp_path / "full" / "checkpoint.pt"), load_checkpoint(tmp_path / "part" / "checkpoint.pt")
    for (ka, va), (kb, vb) in zip(ca["optimizer"]["state"].items(), cb["optimizer"]["state"].items()):
        assert torch.equal(va["exp_avg_sq"], vb["exp_avg_sq"])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world_size, port, out_dir):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch.distributed as dist

    res = train(small_cfg(max_steps=3, P=4, K=2), out_dir, data_factory=functools.partial(fake_data, evaluate=False))
    assert not dist.is_initialized()  # train() leaves no process group behind
    torch.save(_state(res.method), os.path.join(out_dir, f"rank{rank}.pt"))


def test_ddp_two_cpu_processes_keep_parameters_equal(tmp_path):
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    s0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    s1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    params = [k for k in s0 if "running" not in k and "num_batches" not in k]
    for k in params:
        assert torch.equal(s0[k], s1[k]), k
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["step"] == 3 and isinstance(ckpt["rng"], list) and len(ckpt["rng"]) == 2
    init = get_method("baseline")(small_cfg(), NUM_CLASSES)
    assert not torch.equal(init.state_dict()["neck.classifier.weight"], s0["neck.classifier.weight"])


def test_bf16_channels_last_sgd_exp_schedule_runs(tmp_path):
    cfg = small_cfg(max_steps=2, amp="bf16", channels_last=True, optimizer="sgd", lr=0.01, schedule="exp",
                    gamma=0.001, exp_decay_start=0, warmup_epochs=0)
    res = train(cfg, tmp_path, data_factory=functools.partial(fake_data, evaluate=False))
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert len(rows) == 2 and all(np.isfinite(float(r["total"])) for r in rows)
    # exp decay from epoch 0: lr after iteration s is 0.01 * 0.001 ** (s / (3 epochs * 4 iterations))
    assert float(rows[1]["lr"]) == pytest.approx(0.01 * 0.001 ** (2 / 12))
    assert res.method.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        train(small_cfg(max_steps=1, amp="fp16"), tmp_path / "fp16", data_factory=fake_data)
