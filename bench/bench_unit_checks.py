"""What the readers' per-unit check costs: first read of every unit, checked vs unchecked (issue 15).

A store of ``--images`` random-but-smooth 256x128 images in units of ``--unit-size``; each pass opens a
fresh Store (so every unit is checked again) and reads every unit once, in order:

* unchecked: ``open_store(path, check_reads=False).images[a:b]`` (zarr decode only);
* checked (CRC-32, markers since issue 15): ``open_store(path).images[a:b]``: marker read + CRC-32;
* checked (sha256, markers written before): the same with the marker's ``crc32`` removed.

Best of ``--repeats`` interleaved passes; ms per unit and the ratio to unchecked.

    python bench/bench_unit_checks.py [--images 1024] [--unit-size 32] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from storage import create_store, image_writer, open_store  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--unit-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    import cv2

    n, H, W = args.images, 256, 128
    rng = np.random.default_rng(0)
    low = rng.integers(0, 256, (n, H // 16, W // 16, 3), dtype=np.uint8)
    images = np.stack([cv2.resize(a, (W, H), interpolation=cv2.INTER_CUBIC) for a in low])
    idx = pd.DataFrame({"image_id": np.arange(n), "dataset": "bench", "split": "train", "pid": np.arange(n) // 8,
                        "camid": 1, "label": np.arange(n) // 8, "relpath": [f"{i}.jpg" for i in range(n)],
                        "status": "ok", "reason": ""})
    with tempfile.TemporaryDirectory(prefix="bench_checks_") as tmp:
        paths = {}
        for kind in ("crc32", "sha256"):
            path = Path(tmp) / kind
            s = create_store(path, dataset="bench", index=idx, image_size=(H, W), source_root="/", unit_size=args.unit_size)
            w = image_writer(s)
            for k, a, b in s.units():
                w.write_unit(k, {"images": images[a:b]})
            s.close()
            if kind == "sha256":
                for m in (path / "units/images").glob("*.json"):
                    meta = json.loads(m.read_text())
                    del meta["crc32"]
                    m.write_text(json.dumps(meta))
            paths[kind] = path
        passes = {
            "unchecked": lambda: open_store(paths["crc32"], check_reads=False),
            "checked, CRC-32": lambda: open_store(paths["crc32"]),
            "checked, sha256 (old markers)": lambda: open_store(paths["sha256"]),
        }
        best = {k: float("inf") for k in passes}
        units = open_store(paths["crc32"]).units()
        for _ in range(args.repeats):
            for name, make in passes.items():
                s = make()
                t = time.perf_counter()
                for _, a, b in units:
                    s.images[a:b]
                best[name] = min(best[name], (time.perf_counter() - t) * 1000 / len(units))
    base = best["unchecked"]
    print(f"{n} images {H}x{W}, {len(units)} units of {args.unit_size} ({args.unit_size * H * W * 3 / 2**20:.1f} MiB each)")
    for name, ms in best.items():
        print(f"{name:32s} {ms:7.2f} ms/unit  {ms / base:5.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
