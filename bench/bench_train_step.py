"""Training images/s of each method at its paper resolution and batch, and inference ms/image.

One training iteration per method (forward, the method's own losses, backward, optimiser
step) on a random batch already on the device (``images``, ``labels`` and the priors the
method reads: DSAP-images S = 32 for DSA-reID, the MPN mask/ROI on the feature-map grid),
so only the model's cost is measured. Each method uses its ``Config`` defaults: paper
backbone, input size and P x K (``--smoke`` shrinks everything for a CPU check). Variants,
timed in the same run, interleaved, median of the per-iteration times:

* ``fp32`` -- contiguous float32 (the reference row);
* ``bf16+cl`` -- bf16 autocast with channels_last activations and weights;
* ``bf16+cl+compile`` -- the same under ``torch.compile`` (``--no-compile`` skips it).

Inference: ``extract`` in eval mode, batch ``--infer-batch``, ms per image, printed next to
the papers' per-image figures (MPN Table 9, on a Titan V: MPN° 10.9 ms, DSA-reID 34.7 ms).

    python bench/bench_train_step.py --device cuda                  # all methods, paper settings
    python bench/bench_train_step.py --smoke                        # CPU check, seconds
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch  # noqa: E402

from reid_train.methods import get_method  # noqa: E402

PAPER_MS_PER_IMAGE = {"mpn": ("MPN° (Table 9, Titan V)", 10.9), "dsa": ("DSA-reID (Table 9, Titan V)", 34.7)}
METHODS = ("baseline", "alignedreid", "sn", "mpn", "dsa")
VARIANTS = {"fp32": (False, False, False), "bf16+cl": (True, True, False), "bf16+cl+compile": (True, True, True)}
NUM_CLASSES = 751  # Market-1501 training identities


def make_batch(cls, cfg, device) -> dict:
    P, K = cfg.P, cfg.K
    H, W = cfg.size
    B = P * K
    g = torch.Generator().manual_seed(0)
    batch = {"images": torch.randn(B, 3, H, W, generator=g), "labels": torch.arange(P).repeat_interleave(K),
             "pids": torch.arange(P).repeat_interleave(K), "camids": torch.arange(B) % 6,
             "image_ids": torch.arange(B)}
    if "priors/dsap" in cls.requires:
        batch["dsap"] = torch.randn(B, 24, 3, 32, 32, generator=g)
        batch["dsap_valid"] = torch.rand(B, 24, 32, 32, generator=g) > 0.5
    if "priors/mpn" in cls.requires:
        h, w = H // 16, W // 16  # stride 16 with last stride 1
        batch["mpn_mask"] = (torch.rand(B, h, w, generator=g) > 0.3).float()
        batch["mpn_roi"] = torch.tensor([[1, h - 2]] * B)
        batch["mpn_fallback"] = torch.zeros(B, dtype=torch.bool)
    return {k: v.to(device) for k, v in batch.items()}


def build(name: str, args):
    cls = get_method(name)
    overrides = {}
    if args.smoke:
        cfg0 = cls.Config()
        overrides = dict(backbone="resnet18", size=(cfg0.size[0] // 4, cfg0.size[1] // 4), P=4, K=4)
        if name == "dsa":
            overrides["dsag_widths"] = tuple(max(8, w // 16) for w in cfg0.dsag_widths)
    cfg = cls.Config(**overrides)
    torch.manual_seed(0)
    return cls, cfg


def make_step(cls, cfg, device, bf16: bool, channels_last: bool, compiled: bool):
    method = cls(cfg, num_classes=NUM_CLASSES).to(device)
    batch = make_batch(cls, cfg, device)
    if channels_last:
        method = method.to(memory_format=torch.channels_last)
        batch["images"] = batch["images"].contiguous(memory_format=torch.channels_last)
    opt = method.build_optimizer(cfg)
    forward = torch.compile(method) if compiled else method
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else nullcontext

    def step() -> None:
        with autocast():
            out = forward(batch)
            loss = sum(method.losses(out, batch).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return method, batch, step


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_calls(fn, n: int, device) -> list[float]:
    times = []
    for _ in range(n):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return times


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=list(METHODS), help=f"methods to time (default: {' '.join(METHODS)})")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cuda or cpu (default: cuda when available)")
    p.add_argument("--iters", type=int, default=10, help="timed iterations per variant and repeat (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first (compile happens here; default 3)")
    p.add_argument("--repeats", type=int, default=2, help="interleaved repeats of the variants (default 2)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    p.add_argument("--infer-batch", type=int, default=64, help="images per inference batch (default 64)")
    p.add_argument("--smoke", action="store_true", help="resnet18, a quarter of the resolution, P4 x K4 (CPU check)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    else:
        print(f"device: CPU, {torch.get_num_threads()} threads, torch {torch.__version__}")
    variants = {k: v for k, v in VARIANTS.items() if not (args.no_compile and v[2])}
    for name in args.methods:
        cls, cfg = build(name, args)
        B = cfg.P * cfg.K
        steps = {}
        for v, (bf16, cl, comp) in variants.items():
            method, batch, step = make_step(cls, cfg, device, bf16, cl, comp)
            for _ in range(args.warmup):
                step()
            steps[v] = (method, batch, step)
        times: dict[str, list[float]] = {v: [] for v in variants}
        for _ in range(args.repeats):
            for v, (_, _, step) in steps.items():
                times[v] += time_calls(step, args.iters, device)
        print(f"\n{name}: {cfg.backbone} {cfg.size[0]}x{cfg.size[1]}, P{cfg.P} x K{cfg.K} = {B} images/iteration")
        base = statistics.median(times["fp32"])
        for v in variants:
            t = statistics.median(times[v])
            print(f"  train {v:<16s} {t * 1e3:8.1f} ms/it  {B / t:8.1f} images/s  {base / t:5.2f}x fp32")
        # inference, the deployed extractor, fp32 and bf16+cl
        method, _, _ = steps["fp32"]
        method.eval()
        infer = make_batch(cls, cfg, device)
        reps = max(1, args.infer_batch // B)
        infer = {k: torch.cat([t] * reps) for k, t in infer.items()}
        with torch.no_grad():
            ms = statistics.median(time_calls(lambda: method.extract(infer), args.iters, device)) * 1e3
            with torch.autocast(device.type, dtype=torch.bfloat16):
                ms_bf16 = statistics.median(time_calls(lambda: method.extract(infer), args.iters, device)) * 1e3
        n = infer["images"].shape[0]
        paper = PAPER_MS_PER_IMAGE.get(name)
        beside = f"   paper: {paper[0]} {paper[1]} ms/image" if paper else ""
        print(f"  inference fp32 {ms / n:7.3f} ms/image, bf16 {ms_bf16 / n:7.3f} ms/image (batch {n}){beside}")
        del steps
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
