"""CPU training-step speed of the strong baseline: memory format, precision, threads.

One training iteration of :class:`reid_train.methods.baseline.Baseline`
(forward, CE-LS + batch-hard triplet, backward, Adam step) on random P x K
batches already in memory, so only the model's cost is measured. Variants,
each against the named baseline "contiguous fp32, all threads" measured in
the same run (interleaved repeats, median of the per-iteration times):

* ``channels_last`` -- NHWC activations (oneDNN's native layout on CPU);
* ``bf16 autocast`` -- only pays off on CPUs with native bf16 (AVX512-BF16/AMX);
* ``1 thread`` -- what one of two DDP processes on 2 cores gets.

Also prints the iterations a few minutes buy, the number the CPU demo needs.

    python bench/bench_train_step.py [--backbone resnet18] [--size 128x64] [--pk 8 4] [--iters 6]
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

from reid_train.config import parse_size  # noqa: E402
from reid_train.methods import get_method  # noqa: E402

VARIANTS = {
    "contiguous fp32 (baseline)": dict(channels_last=False, bf16=False, threads=0),
    "channels_last fp32": dict(channels_last=True, bf16=False, threads=0),
    "contiguous bf16 autocast": dict(channels_last=False, bf16=True, threads=0),
    "contiguous fp32, 1 thread": dict(channels_last=False, bf16=False, threads=1),
}


def make_step(args, channels_last: bool, bf16: bool):
    cls = get_method("baseline")
    cfg = cls.Config(backbone=args.backbone, last_stride=args.last_stride, size=args.size, P=args.pk[0], K=args.pk[1])
    torch.manual_seed(0)
    method = cls(cfg, num_classes=100)
    if channels_last:
        method = method.to(memory_format=torch.channels_last)
    opt = method.build_optimizer(cfg)
    P, K = args.pk
    images = torch.randn(P * K, 3, *args.size)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    batch = {"images": images, "labels": torch.arange(P).repeat_interleave(K)}

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
            out = method(batch)
            loss = sum(method.losses(out, batch).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--last-stride", dest="last_stride", type=int, default=2)
    p.add_argument("--size", default="128x64", type=parse_size, help="HxW (default 128x64)")
    p.add_argument("--pk", nargs=2, type=int, default=[8, 4], metavar=("P", "K"))
    p.add_argument("--iters", type=int, default=6, help="timed iterations per repeat (default 6)")
    p.add_argument("--repeats", type=int, default=2, help="interleaved repeats (default 2)")
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), help="subset of: %(default)s")
    args = p.parse_args()
    all_threads = torch.get_num_threads()
    steps = {name: make_step(args, VARIANTS[name]["channels_last"], VARIANTS[name]["bf16"]) for name in args.variants}
    times: dict[str, list[float]] = {name: [] for name in args.variants}
    for _ in range(args.repeats):
        for name, step in steps.items():
            torch.set_num_threads(VARIANTS[name]["threads"] or all_threads)
            step()  # warm-up (oneDNN primitive creation)
            for _ in range(args.iters):
                t = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - t)
    torch.set_num_threads(all_threads)
    P, K = args.pk
    print(f"{args.backbone} last_stride={args.last_stride} {args.size[0]}x{args.size[1]} P{P}xK{K} "
          f"({P * K} images/iteration), {all_threads} threads, median of {args.iters * args.repeats} iterations")
    base = statistics.median(times[args.variants[0]])
    for name in args.variants:
        t = statistics.median(times[name])
        print(f"  {name:<28} {t:6.3f} s/it  {P * K / t:6.1f} img/s  {base / t:5.2f}x  "
              f"{int(180 / t):5d} it in 3 min")


if __name__ == "__main__":
    main()
