"""A store on S3 against the same store on local disk, in the same run: ingest and loader throughput.

The S3 API is moto's standalone server on 127.0.0.1 (``pip install 's3fs' 'moto[server]'``), reached
through s3fs exactly as a real bucket is (credentials and endpoint from ``AWS_*`` variables). moto is a
Python server sharing the machine's cores with the benchmark, so the figures measure the cost of our
object-store code path (one request per chunk, table and marker; no listing cache), not a real S3
network: on real S3 add the round-trip time per request and divide by the parallel requests.

* ingest: the ingest job (decode, check, resize, write one unit after the other) on a synthetic world
  in the Market-1501 layout, into ``DIR/local`` and into ``s3://bench/store``, one process each;
* loader, streaming: ``TrainLoader(..., cache=False)`` P×K batches, every batch reading its chunks
  (the loader's read-whole-once of arrays under 64 MiB is switched off here, so that a small world
  measures what a Market-sized one does);
* loader, cached: ``TrainLoader(..., cache=True)`` after one epoch has filled the cache;
* eval: one ``EvalLoader`` pass over the gallery split.

    python bench/bench_s3.py [--ids 60] [--images-per-id 12] [--batches 20] [--workers 2] [--repeats 2]
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def ingest(world: Path, url: str, unit_size: int) -> tuple[float, int]:
    from pipelines.ingest import plan_ingest, write_image_units
    from storage import create_store, image_writer

    t0 = time.perf_counter()
    index = plan_ingest("market1501", world, progress=False)
    s = create_store(url, dataset="market1501", index=index, image_size=(128, 64), source_root=index.attrs["root"],
                     unit_size=unit_size)
    write = getattr(write_image_units, "fn", write_image_units)
    write(s.url, index.attrs["root"], [u[0] for u in image_writer(s).pending()])
    return time.perf_counter() - t0, s.n_images


def loader_rate(url: str, args, cache: bool) -> float:
    from reid_train.data import loader as loader_module
    from reid_train.data.augment import AugmentConfig
    from reid_train.data.loader import TrainLoader

    loader_module.SMALL_ARRAY_BYTES = 0  # stream (or cache chunk by chunk) even a small world
    loader = TrainLoader(url, args.P, args.K, workers=args.workers, cache=cache, augment=AugmentConfig().off())
    if cache:
        for _ in loader:  # one epoch fills the cache
            pass
    batches = loader.batches(loader.step, loader.step + args.batches)
    next(batches)  # warm-up: thread pool, first chunks
    t0 = time.perf_counter()
    n = sum(1 for _ in islice(batches, args.batches - 1))
    return n * args.P * args.K / (time.perf_counter() - t0)


def eval_rate(url: str, workers: int) -> float:
    from reid_train.data.loader import EvalLoader

    loader = EvalLoader(url, "gallery", batch_size=64, workers=workers)
    t0 = time.perf_counter()
    n = sum(len(b["images"]) for b in loader)
    return n / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--ids", type=int, default=60, help="identities of the synthetic world")
    ap.add_argument("--images-per-id", type=int, default=12, help="images per identity")
    ap.add_argument("--unit-size", type=int, default=32, help="store chunk (write unit) in images")
    ap.add_argument("--P", type=int, default=8)
    ap.add_argument("--K", type=int, default=4)
    ap.add_argument("--batches", type=int, default=20, help="timed P×K batches per loader measurement")
    ap.add_argument("--workers", type=int, default=2, help="loader threads")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats of the loader measurements")
    args = ap.parse_args(argv)
    try:
        import s3fs
        from moto.server import ThreadedMotoServer
    except ImportError:
        raise SystemExit("bench_s3 needs s3fs and moto's server: pip install 's3fs' 'moto[server]'") from None
    from priors.synthetic import write_dataset

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=f"http://{host}:{port}")
    try:
        s3fs.S3FileSystem().mkdir("bench")
        with tempfile.TemporaryDirectory() as tmp:
            world = Path(tmp) / "world"
            write_dataset(world, ids=args.ids, images_per_id=args.images_per_id, cameras=6, seed=0, progress=False)
            stores = {"local": str(Path(tmp) / "local"), "s3": "s3://bench/store"}
            rows: dict[str, dict[str, float]] = {name: {} for name in stores}
            for name, url in stores.items():
                seconds, n = ingest(world, url, args.unit_size)
                rows[name]["ingest"] = n / seconds
            for _ in range(args.repeats):  # interleaved; the best of the repeats is kept
                for name, url in stores.items():
                    for key, rate in [("streaming", lambda: loader_rate(url, args, cache=False)),
                                      ("cached", lambda: loader_rate(url, args, cache=True)),
                                      ("eval", lambda: eval_rate(url, args.workers))]:
                        rows[name][key] = max(rows[name].get(key, 0.0), rate())
    finally:
        server.stop()
    print(f"{n} images 128x64, unit {args.unit_size}, P×K {args.P}×{args.K}, {args.workers} loader threads")
    print(f"{'images/s':<22}{'local':>10}{'s3 (moto)':>12}{'s3 / local':>12}")
    for key, label in [("ingest", "ingest job"), ("streaming", "TrainLoader streaming"),
                       ("cached", "TrainLoader cached"), ("eval", "EvalLoader gallery")]:
        a, b = rows["local"][key], rows["s3"][key]
        print(f"{label:<22}{a:>10.0f}{b:>12.0f}{b / a:>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
