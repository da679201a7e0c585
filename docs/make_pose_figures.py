"""Figures of the mediapipe backends on real crops from ../shared/data.

* ``docs/figures/pose_chart_real.png`` — per crop: the crop, the ``pose-chart``
  part map over it, U and V, and the 24 DSAP-images (S = 32, DSA-reID Sec. 3.1)
  warped with :func:`priors.dsap.warp_dsap` (grey = no pixel), laid out like
  DensePose's atlas: column ``c``, row ``r`` holds part ``6 c + r + 1``;
* ``docs/figures/pose_parsing_real.png`` — per crop: the crop with BlazePose
  landmarks, the selfie-segmentation mask, the coarse parsing (MPN Sec. 3.2).

Usage: ``python docs/make_pose_figures.py [--data ../shared/data] [--out docs/figures]``
"""
from __future__ import annotations

import argparse
import colorsys
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STORE_HW = (256, 128)
# (file, dataset folder): front, back, side views, a cyclist and a CUHK03 pair
PICKS = (
    ("mini_market1501/bounding_box_test/0013_c5s1_000551_04.jpg"),
    ("mini_market1501/bounding_box_test/0006_c2s3_069327_01.jpg"),
    ("mini_market1501/bounding_box_test/0009_c6s1_000476_03.jpg"),
    ("mini_market1501/bounding_box_test/0004_c1s6_016996_02.jpg"),
    ("cuhk03_labeled_val/0003_00.jpg"),
    ("cuhk03_labeled_val/0020_07.jpg"),
)


def part_palette() -> np.ndarray:
    """(25, 3) RGB in [0, 1]: hue per body region, lighter = front / inside, darker = back / outside."""
    region_hue = {
        (1, 2): 0.60, (3, 4): 0.15, (5, 6): 0.08, (7, 8, 9, 10): 0.33, (11, 12, 13, 14): 0.45,
        (15, 16, 17, 18): 0.85, (19, 20, 21, 22): 0.95, (23, 24): 0.02,
    }
    second = {2, 4, 5, 8, 10, 12, 14, 15, 17, 19, 21, 24}  # left side / front torso: more saturated
    back = {1, 7, 8, 11, 12, 17, 18, 21, 22}
    pal = np.zeros((25, 3))
    for parts, hue in region_hue.items():
        for p in parts:
            pal[p] = colorsys.hsv_to_rgb(hue, 0.9 if p in second else 0.5, 0.55 if p in back else 0.95)
    return pal


def save_small(fig, out: Path, dpi: int = 100) -> None:
    """Save, then quantise to a 256-colour palette (a third of the bytes; the figures live in git)."""
    from PIL import Image

    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    Image.open(out).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)


def load(data: Path, rel: str) -> np.ndarray:
    img = cv2.imread(str(data / rel))
    if img is None:
        raise FileNotFoundError(data / rel)
    return cv2.resize(img[:, :, ::-1], STORE_HW[::-1], interpolation=cv2.INTER_LINEAR)


def dsap_mosaic(dsap: np.ndarray, valid: np.ndarray, gap: int = 2) -> np.ndarray:
    """(24, 3, S, S) + (24, S, S) -> one (6 S, 4 S) RGB image, invalid cells grey."""
    S = dsap.shape[-1]
    out = np.full((6 * S + 5 * gap, 4 * S + 3 * gap, 3), 255, np.uint8)
    for p in range(24):
        c, r = divmod(p, 6)
        tile = dsap[p].transpose(1, 2, 0).copy()
        tile[~valid[p]] = (tile[~valid[p]] * 0.25 + 100).astype(np.uint8)
        out[r * (S + gap): r * (S + gap) + S, c * (S + gap): c * (S + gap) + S] = tile
    return out


def chart_figure(images, names, res, out: Path) -> bool:
    try:
        from priors.dsap import warp_dsap
    except ImportError:
        warp_dsap = None
    pal = part_palette()
    cols = 5 if warp_dsap else 4
    fig, axes = plt.subplots(len(images), cols, figsize=(1.7 * cols, 3.0 * len(images)),
                             gridspec_kw={"width_ratios": [1, 1, 1, 1, 1.6][:cols]})
    for k, img in enumerate(images):
        i = res.i[k]
        person = i > 0
        overlay = img / 255.0 * 0.35 + pal[i] * 0.65
        overlay[~person] = img[~person] / 255.0 * 0.5
        ax = axes[k]
        ax[0].imshow(img)
        ax[0].set_title(f"{names[k]}\n{res.status[k]}", fontsize=6)
        ax[1].imshow(overlay)
        for p in np.unique(i[i > 0]):
            rr, cc = np.nonzero(i == p)
            ax[1].text(np.median(cc), np.median(rr), str(p), fontsize=5, color="white", ha="center", va="center")
        ax[1].set_title("part (DensePose index)", fontsize=6)
        ax[2].imshow(np.where(person, res.u[k], np.nan), vmin=0, vmax=1, cmap="viridis")
        ax[2].set_title("U (proximal 0 -> distal 1)", fontsize=6)
        ax[3].imshow(np.where(person, res.v[k], np.nan), vmin=0, vmax=1, cmap="coolwarm")
        ax[3].set_title("V (across)", fontsize=6)
        if warp_dsap:
            dsap, valid = warp_dsap(img, i, res.u[k], res.v[k], S=32)
            ax[4].imshow(dsap_mosaic(dsap, valid))
            ax[4].set_title("24 DSAP-images (col c, row r = part 6c+r+1)", fontsize=6)
        for a in ax:
            a.set_xticks([]), a.set_yticks([])
    fig.suptitle("pose-chart: mediapipe landmarks + selfie mask -> approximate DensePose IUV (coarser than DensePose)",
                 fontsize=7)
    fig.tight_layout()
    save_small(fig, out)
    return warp_dsap is not None


def parsing_figure(images, names, runner, parsing, out: Path) -> None:
    colours = np.array([[0, 0, 0], [1.0, 0.8, 0.2], [0.2, 0.5, 1.0], [1.0, 0.3, 0.3], [0.6, 0.6, 0.6]])
    pose = runner.pose(images)
    probs = runner.selfie(images)
    res = parsing.parse(images, None)
    fig, axes = plt.subplots(len(images), 3, figsize=(5.0, 3.0 * len(images)))
    for k, img in enumerate(images):
        ax = axes[k]
        ax[0].imshow(img)
        if pose.found[k]:
            lm = pose.landmarks[k]
            seen = lm[:, 3] >= 0.5
            ax[0].scatter(lm[seen, 0], lm[seen, 1], s=5, c="lime")
            ax[0].scatter(lm[~seen, 0], lm[~seen, 1], s=5, c="red")
            ax[0].set_xlim(-0.5, img.shape[1] - 0.5), ax[0].set_ylim(img.shape[0] - 0.5, -0.5)
        ax[0].set_title(f"{names[k]}\nlandmarks (red: visibility < 0.5)", fontsize=6)
        ax[1].imshow(probs[k], vmin=0, vmax=1, cmap="gray")
        ax[1].contour(probs[k] >= 0.5, levels=[0.5], colors="orange", linewidths=0.6)
        ax[1].set_title("selfie probability, mask at 0.5", fontsize=6)
        ax[2].imshow(img / 255.0 * 0.3 + colours[res.labels[k]] * 0.7)
        ax[2].set_title(f"coarse parsing ({res.status[k]})\nhead / left leg / right leg / other", fontsize=6)
        for a in ax:
            a.set_xticks([]), a.set_yticks([])
    fig.tight_layout()
    save_small(fig, out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures")
    args = parser.parse_args(argv)
    from priors.backends.pose_chart import PoseChartEstimator
    from priors.backends.pose_parsing import PoseParsing

    args.out.mkdir(parents=True, exist_ok=True)
    images = np.stack([load(args.data, rel) for rel in PICKS])
    names = [Path(rel).stem for rel in PICKS]
    est = PoseChartEstimator()
    with_dsap = chart_figure(images, names, est.estimate(images, None), args.out / "pose_chart_real.png")
    parsing = PoseParsing()
    parsing_figure(images, names, parsing._runner, parsing, args.out / "pose_parsing_real.png")
    print(f"wrote {args.out / 'pose_chart_real.png'} (DSAP grid: {'yes' if with_dsap else 'no, priors.dsap missing'})")
    print(f"wrote {args.out / 'pose_parsing_real.png'}")


if __name__ == "__main__":
    main()
