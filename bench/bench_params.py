"""Parameter counts of DSA-reID and MPN next to MPN's Table 9 (TPAMI 2020, Sec. 5.5).

Table 9 counts ResNet-50 models at 384 x 128 and leaves out "the parameters
for classification layers in the training stage [which depend] on the
identity number". We count the same way: every parameter except the
identity classifiers (for DSA-reID, the second FC of each two-FC classifier
depends on the identity count; both FCs are left out here and reported on a
separate line). "Testing" is the deployed model: DSA-reID's MF-Stream
(Sec. 3.2: the DSAG-Stream is discarded), MPN's backbone + MTs (ATs removed).

The models are built on the ``meta`` device: no memory, no initialisation, so
the 190M-parameter DSA-reID costs nothing to count. ``--time`` also measures
the CPU time per image of the two test-time models (real weights, eval mode,
batch 8), as a ratio against MPN° measured in the same run.

    python bench/bench_params.py [--time] [--classes 751]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reid_train.methods import get_method  # noqa: E402

# MPN Table 9 (training # params, testing # params), millions; time costs on a Titan V (ms/image)
TABLE9 = {
    "PCB": (26.8, 26.8, 8.3, 4.9),
    "MGN": (68.8, 68.8, 16.2, 11.9),
    "Pyramid": (29.1, 29.1, 14.5, 6.4),
    "DSA-reID": (187.8, 38.5, 34.7, 5.4),
    "MPN°": (31.5, 31.5, 10.9, 5.1),
}


def count(module) -> int:
    return sum(p.numel() for p in module.parameters()) if module is not None else 0


def build(name: str, device: str = "meta", **cfg):
    cls = get_method(name)
    with torch.device(device):
        return cls(cls.Config(**cfg), num_classes=751)


def dsa_rows(m) -> dict:
    mf, dsag = m.mf, m.dsag
    trunk = count(mf.backbone) - count(mf.backbone.layer4)
    classifiers = sum(count(c) for c in (m.cls_f_global, m.cls_f_local, m.cls_z_global, m.cls_z_local))
    return {
        "train": m.training_parameters(), "test": m.inference_parameters(),
        "parts": [
            ("MF-Stream conv1-conv4_x (ResNet-50 trunk)", trunk),
            ("MF-Stream global branch (conv5_x, last stride 1)", count(mf.backbone.layer4)),
            ("MF-Stream 8 part-aware branches (conv5_x at 1/8 width)", count(mf.local_branches)),
            ("DSAG-Stream MB-Ns conv1-conv4_x (24 / 13 branches)",
             sum(count(x) for x in (dsag.conv1, dsag.conv2, dsag.conv3_x, dsag.conv4_x))),
            ("DSAG-Stream head conv5_g (3x3, 2048)", count(dsag.conv5_g)),
            ("DSAG-Stream head conv5_l (8 x 3x3, 256)", count(dsag.conv5_l)),
            ("(excluded) 11 two-FC classifiers, 751 identities", classifiers),
        ],
    }


def mpn_rows(m) -> dict:
    tasks = count(m.mt)
    classifiers = count(m.mt_classifiers) + count(m.at_classifiers)
    return {
        "train": m.training_parameters(), "test": m.inference_parameters(),
        "parts": [
            ("ResNet-50 (last stride 1)", count(m.backbone)),
            ("6 MT/AT pairs: 1x1 convs (+ CA), shared by PSA", tasks),
            ("(excluded) 12 FC classifiers, 751 identities", classifiers),
        ],
    }


def cpu_time(model, size=(384, 128), batch=8, repeats=3) -> float:
    """Best-of-``repeats`` seconds per image of ``model.extract`` (eval, no_grad)."""
    model.eval()
    x = {"images": torch.randn(batch, 3, *size)}
    with torch.no_grad():
        model.extract(x)
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            model.extract(x)
            best = min(best, time.perf_counter() - t)
    return best / batch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--time", action="store_true", help="also time the test-time models on this CPU (~1 min)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads for --time (0: all cores)")
    args = ap.parse_args(argv)

    models = {
        "DSA-reID": dsa_rows(build("dsa")),
        "MPN°": mpn_rows(build("mpn", channel_attention=False)),
        "MPN (with CA)": mpn_rows(build("mpn")),
    }
    print("Parameters in millions, identity classifiers excluded (MPN Table 9 convention), ResNet-50.\n")
    print(f"{'model':16s} {'train ours':>10s} {'paper':>7s} {'ratio':>6s}   {'test ours':>9s} {'paper':>7s} {'ratio':>6s}")
    for name, r in models.items():
        paper = TABLE9.get(name)
        tr, te = r["train"] / 1e6, r["test"] / 1e6
        if paper:
            print(f"{name:16s} {tr:10.1f} {paper[0]:7.1f} {tr / paper[0]:6.3f}   {te:9.1f} {paper[1]:7.1f} "
                  f"{te / paper[1]:6.3f}")
        else:
            print(f"{name:16s} {tr:10.1f} {'-':>7s} {'':6s}   {te:9.1f} {'-':>7s}")
    for name in ("PCB", "MGN", "Pyramid"):
        p = TABLE9[name]
        print(f"{name:16s} {'-':>10s} {p[0]:7.1f} {'':6s}   {'-':>9s} {p[1]:7.1f}   (not implemented here)")
    for name, r in models.items():
        print(f"\n{name} breakdown:")
        for label, n in r["parts"]:
            print(f"  {label:58s} {n / 1e6:8.2f}M")

    if args.time:
        if args.threads:
            torch.set_num_threads(args.threads)
        torch.manual_seed(0)
        mpn_o = build("mpn", device="cpu", channel_attention=False)
        dsa = build("dsa", device="cpu").drop_training_modules()
        t_mpn, t_dsa = cpu_time(mpn_o), cpu_time(dsa)
        p_dsa, p_mpn = TABLE9["DSA-reID"][3], TABLE9["MPN°"][3]
        print(f"\nTest-time CPU cost per 384x128 image ({torch.get_num_threads()} threads, batch 8, best of 3):")
        print(f"  MPN°  {1e3 * t_mpn:8.1f} ms  (baseline of the ratio)")
        print(f"  DSA-reID MF-Stream {1e3 * t_dsa:8.1f} ms  ratio {t_dsa / t_mpn:.2f}  "
              f"(Table 9, Titan V: {p_dsa} / {p_mpn} ms = {p_dsa / p_mpn:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
