"""Export a run's inference model to ONNX or TorchScript.

    python -m reid_train.export --run runs/dsa --format onnx          # -> runs/dsa/export/model.onnx
    python -m reid_train.export --run runs/mpn --format torchscript --out deploy/   # -> deploy/model.ts

The exported model maps normalised images to the features evaluation uses:
``images`` float32 (B, 3, H, W), RGB, ``(x / 255 - mean) / std`` with the
ImageNet mean/std, at the run's input size -> ``features`` float32 (B, D),
B dynamic. It is ``Method.extract`` on ``{"images": images}``, so by default:

* DSA-reID: ``[f_G, f_L]`` of the MF-Stream only (Table 3 "Only MF-Stream"); the
  DSAG-Stream and the classifiers are not exported;
* MPN: ``h = [f_1 .. f_K]`` of the main tasks (Eq. 11); the auxiliary tasks are not;
* AlignedReID: net 1's global feature (Sec. 3.1: local features only help
  training); ``--set eval_local=true`` exports global + flattened local features;
* baseline / SN: the evaluation feature of the method.

Every sub-module ``extract`` does not call is replaced by an empty
``nn.Identity`` before export (so only the inference weights ship), and the
pruned model is checked against the full one. With ``--flip`` (default: the
run's ``flip_eval``) the model averages the features of the image and its
mirror inside, as evaluation does. A configuration that needs store priors at
test time (DSA ``eval_feature=fused``: the DSAG-Stream reads DSAP-images) is refused.

After writing, the file is loaded back (onnxruntime / ``torch.jit.load``) and
its features on a batch of the run's store images (random images when the store
is not readable) are compared with the PyTorch model at two batch sizes; the
largest |difference| goes to ``FILE.json`` beside the model with the input
size, normalisation, feature size, distance and the run's provenance.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from storage.cli import ArgumentParser, HelpFormatter, configure_logging, key_value, positive_float, run_cli

log = logging.getLogger(__name__)

FORMATS = {"onnx": ".onnx", "torchscript": ".ts"}
OPSET = 17


class FeatureModel(nn.Module):
    """``images -> features``: the method's ``extract``, optionally flip-averaged."""

    def __init__(self, method: nn.Module, flip: bool = False):
        super().__init__()
        self.method = method
        self.flip = bool(flip)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        f = self.method.extract({"images": images})
        if self.flip:
            f = (f + self.method.extract({"images": images.flip(-1)})) / 2
        return f


def prune_unused(model: nn.Module, images: torch.Tensor) -> tuple[nn.Module, list[str]]:
    """Replace every sub-module that a forward pass on ``images`` neither calls
    nor reaches through a called descendant with ``nn.Identity`` (in place);
    returns ``(model, names replaced)``. A module shared by two parents (MPN's
    hard parameter sharing) stays when any of its uses is called."""
    called: set[int] = set()
    hooks = [m.register_forward_pre_hook(lambda mod, args: called.add(id(mod))) for m in model.modules()]
    try:
        with torch.no_grad():
            model(images)
    finally:
        for h in hooks:
            h.remove()
    removed: list[str] = []
    memo: dict[int, bool] = {}

    def used(module: nn.Module) -> bool:  # called itself, or holds a called module (e.g. the Method)
        if id(module) not in memo:
            memo[id(module)] = id(module) in called or any(used(c) for c in module.children())
        return memo[id(module)]

    def visit(module: nn.Module, prefix: str) -> None:
        for name, child in list(module._modules.items()):
            if child is None:
                continue
            if not used(child):
                module._modules[name] = nn.Identity()
                removed.append(prefix + name)
            else:
                visit(child, f"{prefix}{name}.")

    visit(model, "")
    return model, removed


def inference_model(method: nn.Module, size: tuple[int, int], flip: bool = False) -> FeatureModel:
    """The pruned :class:`FeatureModel` of a loaded method (eval mode, CPU),
    checked to give the same features as the full model."""
    method = method.cpu().eval()
    model = FeatureModel(method, flip).eval()
    probe = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        try:
            full = model(probe)
        except KeyError as e:
            raise ValueError(f"{method.cfg.method} with this config needs store priors at test time ({e}): "
                             "only image-only inference models can be exported") from None
    n_before = sum(p.numel() for p in model.parameters())
    model, removed = prune_unused(model, probe)
    with torch.no_grad():
        pruned = model(probe)
    if not torch.allclose(full, pruned, rtol=0, atol=1e-6):
        raise RuntimeError("pruning changed the features: a sub-module is used without being called")
    log.info("inference model: %.2fM of %.2fM parameters (%d unused modules dropped: %s)",
             sum(p.numel() for p in model.parameters()) / 1e6, n_before / 1e6, len(removed),
             ", ".join(removed[:8]) + (" ..." if len(removed) > 8 else ""))
    return model


def export(model: nn.Module, path: str | Path, fmt: str, size: tuple[int, int]) -> Path:
    """Write ``model`` (images -> features) as ONNX (dynamic batch) or TorchScript."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    if fmt == "onnx":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(path), input_names=["images"], output_names=["features"],
                              dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
                              opset_version=OPSET, dynamo=False)
    elif fmt == "torchscript":
        with torch.no_grad():
            traced = torch.jit.trace(model, example, check_inputs=[(example[:1],), (example.repeat(3, 1, 1, 1),)])
        traced.save(str(path))
    else:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, got {fmt!r}")
    return path


def load_exported(path: str | Path, fmt: str):
    """A callable ``numpy (B,3,H,W) float32 -> numpy (B, D)`` of an exported file."""
    if fmt == "onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            raise ImportError("checking an ONNX export needs onnxruntime: pip install '.[onnx]'") from None
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: session.run(["features"], {"images": np.ascontiguousarray(x, np.float32)})[0]
    module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()

    return run


def max_abs_difference(model: nn.Module, exported, images: np.ndarray) -> float:
    """Largest |feature difference| between the PyTorch model and an exported
    callable, over ``images`` in one batch and in batches of one (dynamic batch)."""
    with torch.no_grad():
        ref = model(torch.from_numpy(images)).numpy()
    whole = exported(images)
    ones = np.concatenate([exported(images[i:i + 1]) for i in range(len(images))])
    return float(max(np.abs(whole - ref).max(), np.abs(ones - ref).max()))


def store_images(store, size: tuple[int, int], n: int = 8) -> np.ndarray | None:
    """``n`` normalised query images of ``store`` as the evaluation loader gives them (None if unreadable)."""
    from storage import StoreError

    from .data.loader import EvalLoader

    try:
        loader = EvalLoader(store, "query", batch_size=n, size=size, workers=1)
        return next(iter(loader))["images"].numpy().astype(np.float32)
    except (StoreError, ValueError, FileNotFoundError, OSError, LookupError):
        return None


def export_run(run: str | Path, fmt: str = "onnx", out: str | Path | None = None, flip: bool | None = None,
               overrides: dict | None = None, check_images: np.ndarray | None = None) -> dict:
    """Export a run directory's inference model into folder ``out`` (default
    ``RUN/export``) as ``model.onnx`` / ``model.ts``; returns the sidecar record
    (also written to ``model.onnx.json`` / ``model.ts.json``)."""
    from .data.augment import IMAGENET_MEAN, IMAGENET_STD
    from .evaluate import load_run

    run = Path(run)
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, got {fmt!r}")
    method = load_run(run, "cpu", **(overrides or {}))
    cfg = method.cfg
    size = tuple(int(v) for v in cfg.size)
    flip = cfg.flip_eval if flip is None else bool(flip)
    model = inference_model(method, size, flip)
    path = export(model, (Path(out) if out else run / "export") / f"model{FORMATS[fmt]}", fmt, size)
    images = check_images if check_images is not None else store_images(cfg.store, size)
    source = "store query images" if check_images is None and images is not None else "given images"
    if images is None:
        images, source = np.random.default_rng(0).standard_normal((8, 3, *size)).astype(np.float32), "random"
    diff = max_abs_difference(model, load_exported(path, fmt), images)
    with torch.no_grad():
        dim = int(model(torch.from_numpy(images[:1])).shape[1])
    ckpt = next((p for p in (run / "model.pt", run / "checkpoint.pt") if p.is_file()), None)
    from storage import make_provenance
    from storage.decode import sha256_file

    record = {
        "file": path.name, "format": fmt, "method": cfg.method,
        "input": {"name": "images", "shape": ["batch", 3, *size], "dtype": "float32", "layout": "RGB, NCHW",
                  "normalise": {"scale": 1 / 255, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}},
        "output": {"name": "features", "shape": ["batch", dim], "dtype": "float32"},
        "distance": method.distance, "flip_averaged": flip,
        "check": {"max_abs_difference": diff, "images": source, "count": int(len(images))},
        "provenance": make_provenance({"name": "reid_train.export", "run": str(run.resolve()),
                                       "weights": ckpt.name if ckpt else None,
                                       "weights_sha256": sha256_file(ckpt) if ckpt else None},
                                      {"format": fmt, "opset": OPSET if fmt == "onnx" else None,
                                       "overrides": overrides or {}}),
    }
    Path(str(path) + ".json").write_text(json.dumps(record, indent=1, default=str))
    return {**record, "path": str(path)}


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m reid_train.export", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--run", required=True, help="run directory written by reid_train.fit")
    p.add_argument("--format", choices=sorted(FORMATS), default="onnx", help="onnx or torchscript (default onnx)")
    p.add_argument("--out", metavar="DIR", help="folder for model.onnx / model.ts and its .json (default RUN/export)")
    flip = p.add_mutually_exclusive_group()
    flip.add_argument("--flip", dest="flip", action="store_true", default=None,
                      help="average the features of the image and its mirror inside the model "
                           "(default: the run's flip_eval)")
    flip.add_argument("--no-flip", dest="flip", action="store_false", help="export without flip averaging")
    p.add_argument("--set", action="append", default=[], type=key_value, metavar="NAME=VALUE",
                   help="change an inference config field (value parsed as YAML, repeatable), "
                        "e.g. --set eval_local=true (AlignedReID), --set eval_branches=global (DSA)")
    p.add_argument("--tolerance", type=positive_float, default=1e-4,
                   help="exit non-zero when the exported features differ from PyTorch's by more (default 1e-4)")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings, errors and the summary line")
    return p


def main(argv: list[str] | None = None) -> int:
    """The command; a user error is one ``error:`` line and exit status 2 (docs/cli.md)."""
    return run_cli(_main, argv)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.quiet)
    rec = export_run(args.run, args.format, args.out, args.flip, dict(args.set))  # load_run refuses a non-run
    diff = rec["check"]["max_abs_difference"]
    print(f"{rec['method']}: {rec['path']} ({rec['format']}, features {rec['output']['shape'][1]}, "
          f"max |diff| vs PyTorch {diff:.2e} on {rec['check']['count']} {rec['check']['images']})")
    if not diff <= args.tolerance:
        print(f"error: exported features differ by {diff:.2e} > {args.tolerance:g}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
