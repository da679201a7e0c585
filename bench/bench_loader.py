"""Training-loader throughput: reid_train.data.TrainLoader on a store vs a JPEG folder + PIL DataLoader.

Same images (real pedestrian crops from ../shared/data resized to the store size, repeated with mirror
copies to ``--images``; synthetic images when that folder is absent), same P×K batches (the same
:class:`reid_train.data.sampler.PKSampler` positions), same augmentation (flip 0.5, pad 10 + random crop,
ImageNet normalisation, random erasing p = 0.5 after Zhong et al.), same number of workers, same
machine, same run. Both produce float (B,3,H,W) batches in the main process.

* baseline: ``torch.utils.data.DataLoader`` over a folder of JPEGs (quality 95), ``num_workers``
  processes, per sample ``PIL.Image.open(...).convert("RGB")`` then the same transform as per-sample
  torch ops (flip, pad, crop, normalise, erase), default collate;
* store, streaming: :class:`TrainLoader` with ``cache=False`` (every batch read from the zarr chunks:
  the first epoch of any run, or a split too large for RAM);
* store, cached: :class:`TrainLoader` with ``cache=True`` after one epoch (decoded chunks kept in RAM:
  every later epoch).
* store, streaming, no unit checks: as streaming, with the readers' per-unit marker + sha256 check
  turned off (``open_store(..., check_reads=False)``): the difference to "streaming" is what the check
  costs; every streaming measurement starts a fresh store object, so its units are checked again.

Measured after ``--warmup`` batches (worker start-up excluded), best of ``--repeats`` interleaved runs.

``--stall-method NAME`` (with ``--device``) measures instead the loader's **stall share** of a training
step: :class:`TrainLoader` (cached and streaming) feeding real training steps of that method (resnet50 at
``--size``, bf16 autocast + channels_last on CUDA), the time spent waiting in ``next(batch)`` over the
whole step time, after ``--warmup`` steps.

    python bench/bench_loader.py [--images 2048] [--batches 40] [--workers 2] [--cores 2]
    python bench/bench_loader.py --stall-method baseline --device cuda --workers 4 --cores 0
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

from reid_train.data.augment import AugmentConfig  # noqa: E402
from reid_train.data.loader import TrainLoader  # noqa: E402
from reid_train.data.sampler import PKSampler  # noqa: E402
from storage import open_store  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def source_images(n: int, size: tuple[int, int], synthetic: bool) -> tuple[np.ndarray, str]:
    """(n,H,W,3) uint8: real crops resized to ``size`` (+ their mirrors), else smooth synthetic images."""
    import cv2

    files = [] if synthetic else sorted(DATA.glob("cuhk03_labeled_val/*.jpg")) + sorted(DATA.glob("mini_market1501/*/*.jpg"))
    H, W = size
    if files:
        crops = [cv2.resize(cv2.imread(str(f))[:, :, ::-1], (W, H), interpolation=cv2.INTER_AREA) for f in files]
        imgs = [crops[i % len(crops)] if (i // len(crops)) % 2 == 0 else crops[i % len(crops)][:, ::-1] for i in range(n)]
        return np.ascontiguousarray(np.stack(imgs)), f"{len(files)} real crops from {DATA}"
    rng = np.random.default_rng(0)
    low = rng.integers(0, 256, (n, H // 16, W // 16, 3), dtype=np.uint8)
    imgs = np.stack([cv2.resize(a, (W, H), interpolation=cv2.INTER_CUBIC) for a in low])
    return imgs, "synthetic (no ../shared/data)"


def build(root: Path, images: np.ndarray, n_ids: int, unit: int) -> tuple[str, list[str], np.ndarray]:
    """The same images as a store and as a JPEG folder; returns (store path, jpeg paths, labels)."""
    import pandas as pd

    from storage import create_store, image_writer

    n, H, W, _ = images.shape
    labels = np.arange(n) * n_ids // n                       # consecutive rows per identity
    camids = np.arange(n) % 6
    idx = pd.DataFrame({"image_id": np.arange(n), "dataset": "bench", "split": "train", "pid": labels,
                        "camid": camids, "label": labels,
                        "relpath": [f"{p:04d}_c{c + 1}_{i:06d}.jpg" for i, (p, c) in enumerate(zip(labels, camids))],
                        "orig_height": H, "orig_width": W, "sha256": "", "status": "ok", "reason": ""})
    jpg = root / "jpg"
    jpg.mkdir()
    paths = []
    for img, rel in zip(images, idx["relpath"]):
        Image.fromarray(img).save(jpg / rel, quality=95)
        paths.append(str(jpg / rel))
    store = create_store(root / "store", dataset="bench", index=idx, image_size=(H, W), source_root=str(jpg),
                         unit_size=unit)
    w = image_writer(store)
    for k, a, b in store.units():
        w.write_unit(k, {"images": images[a:b]})
    return str(root / "store"), paths, labels


class JpegFolder(torch.utils.data.Dataset):
    """The usual re-ID dataset: one JPEG per sample, PIL decode, per-sample torch transform."""

    def __init__(self, paths: list[str], labels: np.ndarray, size: tuple[int, int], cfg: AugmentConfig):
        self.paths, self.labels, self.size, self.cfg = paths, labels, size, cfg
        self.mean = torch.tensor(cfg.mean).view(3, 1, 1)
        self.std = torch.tensor(cfg.std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        cfg, (H, W) = self.cfg, self.size
        with Image.open(self.paths[i]) as im:
            im = im.convert("RGB")
            if im.size != (W, H):
                im = im.resize((W, H), Image.BILINEAR)
            x = torch.from_numpy(np.array(im)).permute(2, 0, 1).float().div_(255)
        if torch.rand(()) < cfg.flip_p:
            x = x.flip(-1)
        p = cfg.pad
        x = F.pad(x, (p, p, p, p))
        oy, ox = torch.randint(0, 2 * p + 1, (2,)).tolist()
        x = x[:, oy:oy + H, ox:ox + W]
        x = (x - self.mean) / self.std
        if torch.rand(()) < cfg.erase_p:  # Zhong et al. Alg. 1
            for _ in range(100):
                area = (cfg.erase_sl + (cfg.erase_sh - cfg.erase_sl) * torch.rand(()).item()) * H * W
                r = cfg.erase_r1 + (1 / cfg.erase_r1 - cfg.erase_r1) * torch.rand(()).item()
                h, w = round((area * r) ** 0.5), round((area / r) ** 0.5)
                y0, x0 = torch.randint(0, H, ()).item(), torch.randint(0, W, ()).item()
                if y0 + h <= H and x0 + w <= W:
                    x[:, y0:y0 + h, x0:x0 + w] = (torch.rand(3, h, w) - self.mean) / self.std
                    break
        return {"images": x, "labels": int(self.labels[i]), "image_ids": i}


def pil_loader(paths, labels, size, cfg, P, K, workers):
    sampler = PKSampler(labels, P, K, seed=0)
    batches = (b.tolist() for b in sampler)
    return torch.utils.data.DataLoader(JpegFolder(paths, labels, size, cfg), batch_sampler=batches,
                                       num_workers=workers, prefetch_factor=2 if workers else None)


def cpu_seconds() -> float:
    """CPU time of this process (all threads) plus its finished children (DataLoader workers)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure(make, n: int, warmup: int) -> tuple[float, float]:
    """(images/s wall, CPU ms per image) over ``n`` batches after ``warmup``.

    CPU time counts from the loader's creation to its shutdown (worker
    start-up included, so it slightly favours neither side)."""
    import gc

    c0 = cpu_seconds()
    it = iter(make())
    for _ in range(warmup):
        next(it)
    start, count = time.perf_counter(), 0
    for batch in islice(it, n):
        count += batch["images"].shape[0]
    wall = time.perf_counter() - start
    del it, batch
    gc.collect()                       # DataLoader workers exit and are reaped here
    time.sleep(0.2)
    return count / wall, (cpu_seconds() - c0) * 1000 / ((n + warmup) * count / n)


def stall_share(store: str, args) -> None:
    """Loader wait time / step time while training ``args.stall_method`` from the store."""
    from reid_train.methods import get_method

    device = torch.device(args.device)
    cls = get_method(args.stall_method)
    cfg = cls.Config(size=tuple(args.size), P=args.P, K=args.K, **({"backbone": args.backbone} if args.backbone else {}))
    method = cls(cfg, num_classes=args.ids).to(device)
    cuda = device.type == "cuda"
    if cuda:
        method = method.to(memory_format=torch.channels_last)
    opt = method.build_optimizer(cfg)
    for cache in (True, False):
        loader = TrainLoader(store, args.P, args.K, workers=args.workers, cache=cache, device=device)
        if cache:
            for _ in loader:  # fill the cache
                pass
        it = iter(loader.batches(0, 10**9))
        wait = total = 0.0
        for k in range(args.warmup + args.batches):
            t0 = time.perf_counter()
            batch = next(it)
            if cuda:
                torch.cuda.synchronize()
            t1 = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False):
                loss = sum(method.losses(method(batch), batch).values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if cuda:
                torch.cuda.synchronize()
            t2 = time.perf_counter()
            if k >= args.warmup:
                wait, total = wait + (t1 - t0), total + (t2 - t0)
        n = args.batches * args.P * args.K
        print(f"  {args.stall_method} on {device}, loader {'cached' if cache else 'streaming'}: "
              f"{n / total:8.1f} images/s, stall share {wait / total:6.1%} of step time "
              f"({wait / args.batches * 1e3:.1f} ms waiting per step)")
        del it, loader


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--images", type=int, default=2048, help="number of images")
    ap.add_argument("--ids", type=int, default=128, help="number of identities")
    ap.add_argument("--size", type=int, nargs=2, default=(256, 128), metavar=("H", "W"))
    ap.add_argument("--P", type=int, default=16)
    ap.add_argument("--K", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2, help="loader workers (threads for ours, processes for PIL)")
    ap.add_argument("--batches", type=int, default=40, help="timed batches per measurement")
    ap.add_argument("--warmup", type=int, default=4, help="untimed batches first")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats; best is reported")
    ap.add_argument("--unit-size", type=int, default=32, help="store chunk (write unit) in images")
    ap.add_argument("--cores", type=int, default=2, help="pin this process and its workers to this many cores (0 = all)")
    ap.add_argument("--synthetic", action="store_true", help="synthetic images even when ../shared/data exists")
    ap.add_argument("--stall-method", help="measure the loader's stall share of this method's training step")
    ap.add_argument("--device", default="cpu", help="device of the --stall-method steps")
    ap.add_argument("--backbone", default="", help="backbone of the --stall-method steps (default: the method's)")
    args = ap.parse_args(argv)

    if args.cores and hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))[:args.cores]
        os.sched_setaffinity(0, cores)
        torch.set_num_threads(len(cores))
    size = tuple(args.size)
    cfg = AugmentConfig()
    t0 = time.perf_counter()
    images, origin = source_images(args.images, size, args.synthetic)
    with tempfile.TemporaryDirectory(prefix="bench_loader_") as tmp:
        store, paths, labels = build(Path(tmp), images, args.ids, args.unit_size)
        jpeg_mb = sum(os.path.getsize(p) for p in paths) / 2**20
        store_mb = sum(f.stat().st_size for f in Path(store).rglob("*") if f.is_file()) / 2**20
        print(f"{args.images} images {size[0]}x{size[1]} ({origin}), {args.ids} ids, batch {args.P}x{args.K}, "
              f"{args.workers} workers, {len(os.sched_getaffinity(0))} cores, torch threads {torch.get_num_threads()}")
        print(f"JPEG folder {jpeg_mb:.0f} MiB, store {store_mb:.0f} MiB (chunks of {args.unit_size}); "
              f"built in {time.perf_counter() - t0:.1f} s")
        if args.stall_method:
            stall_share(store, args)
            return 0

        cached = TrainLoader(store, args.P, args.K, workers=args.workers, cache=True)
        for _ in cached:  # one epoch fills the cache
            pass
        loaders = {
            "JPEG + PIL DataLoader (baseline)": lambda: pil_loader(paths, labels, size, cfg, args.P, args.K, args.workers),
            "store, cached (after epoch 1)": lambda: cached.batches(0, 10**9),
            "store, streaming, no unit checks": lambda: TrainLoader(open_store(store, check_reads=False), args.P,
                                                                    args.K, workers=args.workers,
                                                                    cache=False).batches(0, 10**9),
            "store, streaming (cache off)": lambda: TrainLoader(store, args.P, args.K, workers=args.workers,
                                                                cache=False).batches(0, 10**9),
        }
        best = {k: (0.0, float("inf")) for k in loaders}
        for _ in range(args.repeats):
            for name, make in loaders.items():
                ips, cpu_ms = measure(make, args.batches, args.warmup)
                best[name] = (max(best[name][0], ips), min(best[name][1], cpu_ms))
    base, base_cpu = best["JPEG + PIL DataLoader (baseline)"]
    print(f"{'loader':34s} {'images/s':>9s} {'ratio':>7s}   {'CPU ms/image':>12s} {'ratio':>7s}")
    for name, (ips, cpu_ms) in best.items():
        print(f"{name:34s} {ips:9.0f} {ips / base:6.2f}x   {cpu_ms:12.3f} {base_cpu / cpu_ms:6.2f}x")
    print("(load average during the run: %.1f; ratios compare runs interleaved in this process)" % os.getloadavg()[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
