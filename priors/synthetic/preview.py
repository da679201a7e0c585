"""Contact sheet of a synthetic dataset: identities (rows) across cameras, with their IUV and parsing.

Each cell shows one image as written on disk (the JPEG), its DensePose IUV (part colour, darkened on
a checkerboard in (U, V): the checks stay on the same spot of the body from image to image) and its
LIP parsing, all read back from the dataset folder.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from .dataset import load_sidecar
from .labels import colour_iuv, colour_parsing


def _pick(images: list[dict], n_ids: int, per_id: int) -> list[list[dict]]:
    """Identities with the most cameras first; per identity one image per camera, views as varied as possible."""
    by_pid: dict[int, list[dict]] = {}
    for rec in images:
        if rec["pid"] > 0:
            by_pid.setdefault(rec["pid"], []).append(rec)
    ranked = sorted(by_pid, key=lambda p: (-len({r["camid"] for r in by_pid[p]}), p))[:n_ids]
    rows = []
    for pid in sorted(ranked):
        chosen, views, cams = [], set(), set()
        for rec in sorted(by_pid[pid], key=lambda r: (r["camid"] in cams, r["view"] in views, r["relpath"])):
            if len(chosen) == per_id:
                break
            if rec["camid"] in cams and len({r["camid"] for r in by_pid[pid]}) > len(cams):
                continue
            chosen.append(rec)
            cams.add(rec["camid"])
            views.add(rec["view"])
        rows.append(sorted(chosen, key=lambda r: r["camid"]))
    return rows


def write_preview(root: str | Path, path: str | Path, n_ids: int = 6, per_id: int = 4, zoom: int = 2) -> Path:
    """Write the contact sheet PNG of the dataset at ``root`` to ``path``; returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root, path = Path(root), Path(path)
    images = json.loads((root / "groundtruth" / "attributes.json").read_text())["images"]
    rows = _pick(images, n_ids, per_id)
    if not rows:
        raise ValueError(f"no identities to preview in {root}")
    cells = []
    for row in rows:
        panels = []
        for rec in row:
            img = cv2.imread(str(root / rec["relpath"]), cv2.IMREAD_COLOR)[..., ::-1]
            gt = load_sidecar(root, rec["relpath"])
            trio = np.hstack([img, colour_iuv(gt["i"], gt["u"], gt["v"]), colour_parsing(gt["parsing"])])
            panels.append(np.pad(trio, ((0, 0), (0, 6), (0, 0)), constant_values=255))
        while len(panels) < per_id:
            panels.append(np.full_like(panels[0], 255))
        cells.append(np.pad(np.hstack(panels), ((0, 14), (0, 0), (0, 0)), constant_values=255))
    sheet = np.vstack(cells)
    sheet = cv2.resize(sheet, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST)
    h, w = sheet.shape[:2]
    dpi = 100
    fig = plt.figure(figsize=(w / dpi, (h + 40) / dpi), dpi=dpi)
    ax = fig.add_axes([0, 0, 1, h / (h + 40)])
    ax.imshow(sheet, interpolation="nearest")
    ax.set_axis_off()
    cell_h = sheet.shape[0] / len(cells)
    cell_w = sheet.shape[1] / per_id
    for r, row in enumerate(rows):
        for c, rec in enumerate(row):
            ax.text(c * cell_w + 2, (r + 1) * cell_h - 4 * zoom, f"id {rec['pid']:04d}  cam {rec['camid']}  {rec['view']}",
                    fontsize=8, va="bottom", ha="left", color="black")
    fig.text(0.01, 1 - 20 / (h + 40), "synthetic world: image | DensePose I (colour) with a U,V checkerboard | LIP parsing",
             fontsize=10, va="center")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
