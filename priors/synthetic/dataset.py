"""Write a synthetic world as a Market-1501 folder plus its ground truth.

Layout (the real Market-1501 layout and naming, so ingest reads it with the Market adapter)::

    DIR/bounding_box_train/PPPP_cXsY_FFFFFF_NN.jpg     train identities (half of the ids)
    DIR/query/...                                      test ids: one image per camera seen (at most 3)
    DIR/bounding_box_test/...                          test ids: the rest, plus distractors (pid 0000)
    DIR/groundtruth/<folder>/<stem>.npz                i, u, v, parsing, mask of each image
    DIR/groundtruth/meta.json                          label names and groups, conventions, version, seed, args
    DIR/groundtruth/attributes.json                    identities, cameras, and per image: view, pose,
                                                       box error, occlusion, true person top/bottom rows

Everything is a function of the seed: identities are drawn from ``(seed, 1, pid)``, cameras from
``(seed, 2, cam)``, each image from ``(seed, 4, pid, k)``; files are written with fixed zip
timestamps, so the same arguments give the same bytes.

Splits follow Market-1501: ids are shuffled and split half/half into train and test ids. Every
identity is seen by at least two cameras. For a test id, queries are taken one per camera (up to
three) as long as every query keeps a gallery image of the same id from another camera (the
cross-camera match Market's protocol needs).
"""
from __future__ import annotations

import io
import json
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .body import VIEW_YAW, Pose
from .identity import Identity, sample_identities, sample_identity
from .labels import LIP, LIP_HEAD, LIP_LABELS, LIP_LEFT_LEG, LIP_LOWER_GARMENT, LIP_RIGHT_LEG, PART_NAMES
from .render import BoxError, Camera, Occlusion, render_person, sample_box_error, sample_camera, sample_occlusion

GENERATOR_VERSION = "1.1"  # 1.1: DensePose arm halves (15/16, 19/20 = inside), more occluders
FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
VIEWS = ("front", "left", "back", "right")
MAX_QUERIES = 3


@dataclass(frozen=True)
class ImageSpec:
    """Everything needed to render one image of the dataset."""

    split: str
    pid: int  # 0 = distractor
    camid: int
    name: str
    identity_key: int  # pid, or a distractor's own key
    view: str
    yaw: float
    pose: Pose
    box: BoxError
    occlusion: Occlusion
    render_seed: int

    @property
    def relpath(self) -> str:
        return f"{FOLDERS[self.split]}/{self.name}"


def sidecar_path(root: str | Path, relpath: str) -> Path:
    """``bounding_box_train/0002_c1s1_000123_01.jpg`` -> ``root/groundtruth/bounding_box_train/0002_c1s1_000123_01.npz``."""
    rel = Path(relpath)
    return Path(root) / "groundtruth" / rel.parent / (rel.stem + ".npz")


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez_compressed`` with fixed zip timestamps: the same arrays give the same bytes."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, arr in arrays.items():
            bio = io.BytesIO()
            np.lib.format.write_array(bio, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            zf.writestr(info, bio.getvalue(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=1)


def load_sidecar(root: str | Path, relpath: str) -> dict[str, np.ndarray] | None:
    """The ground truth of one image (``i``, ``u``, ``v``, ``parsing``, ``mask``), or None if absent."""
    path = sidecar_path(root, relpath)
    if not path.is_file():
        return None
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _sample_pose(rng: np.random.Generator) -> Pose:
    standing = rng.random() < 0.1
    return Pose(
        phase=float(rng.uniform(0, 2 * np.pi)),
        stride=float(rng.uniform(0.0, 0.25) if standing else rng.uniform(0.45, 1.15)),
        arm_swing=float(rng.uniform(0.0, 0.3) if standing else rng.uniform(0.4, 1.2)),
        arm_spread=float(rng.uniform(0.03, 0.14)),
    )


def _sample_view(rng: np.random.Generator, camera: Camera) -> tuple[str, float]:
    view = VIEWS[int(rng.choice(4, p=np.asarray(camera.views) / np.sum(camera.views)))]
    return view, float((VIEW_YAW[view] + np.clip(rng.normal(0, 8), -15, 15)) % 360)


def plan_dataset(
    ids: int, images_per_id: int, cameras: int, seed: int, distractors: int | None = None,
    occlusion: float = 0.1,
) -> tuple[list[ImageSpec], list[int]]:
    """All images to render (deterministic for the arguments) and the list of train pids."""
    if ids < 1 or images_per_id < 1 or cameras < 1:
        raise ValueError("ids, images_per_id and cameras must be >= 1")
    if cameras > 6:
        raise ValueError("Market-1501 has cameras c1..c6 (and its ingest adapter reads no others): at most 6 cameras")
    if ids > 9999:
        raise ValueError("Market-1501 names hold four pid digits: at most 9999 identities")
    rng = np.random.default_rng([seed, 0])
    pids = list(range(1, ids + 1))
    order = rng.permutation(ids)
    n_train = ids - ids // 2
    train = sorted(pids[j] for j in order[:n_train])
    cams = {c: sample_camera(c, seed) for c in range(1, cameras + 1)}
    specs: list[ImageSpec] = []
    used_names: set[str] = set()

    def spec(split, pid, key, cam, seq, frame, irng, box=None, box_no=1):
        camera = cams[cam]
        view, yaw = _sample_view(irng, camera)
        name = f"{pid:04d}_c{cam}s{seq}_{frame:06d}_{box_no:02d}.jpg"
        assert name not in used_names, name
        used_names.add(name)
        return ImageSpec(split, pid, cam, name, key, view, yaw, _sample_pose(irng), box or sample_box_error(irng),
                         sample_occlusion(irng, occlusion), int(irng.integers(0, 2**31)))

    for pid in pids:
        prng = np.random.default_rng([seed, 3, pid])
        n_cams = min(cameras, images_per_id, int(prng.integers(2, max(3, min(cameras, 6) + 1))))
        seen = sorted(int(c) for c in prng.choice(np.arange(1, cameras + 1), size=n_cams, replace=False))
        per_image = seen + [int(c) for c in prng.choice(seen, size=images_per_id - n_cams)]
        per_image.sort()
        visit = {c: (int(prng.integers(1, 7)), int(prng.integers(0, 200000))) for c in seen}
        rows = []
        for k, cam in enumerate(per_image):
            seq, frame = visit[cam]
            visit[cam] = (seq, frame + int(prng.integers(5, 60)))
            irng = np.random.default_rng([seed, 4, pid, k])
            rows.append((cam, seq, frame, irng))
        splits = ["train"] * len(rows) if pid in train else _query_gallery([r[0] for r in rows])
        for (cam, seq, frame, irng), split in zip(rows, splits):
            specs.append(spec(split, pid, pid, cam, seq, frame, irng, box_no=1 + int(irng.random() < 0.2) * int(irng.integers(1, 4))))
    n_test = sum(s.split != "train" for s in specs)
    if distractors is None:
        distractors = int(round(0.05 * n_test))
    drng = np.random.default_rng([seed, 5])
    for d in range(distractors):
        irng = np.random.default_rng([seed, 6, d])
        cam = int(drng.integers(1, cameras + 1))
        frame = int(drng.integers(0, 999000))
        while f"0000_c{cam}s1_{frame:06d}_01.jpg" in used_names:
            frame += 1
        loose = BoxError(scale=float(irng.uniform(1.0, 1.6)), dx=float(irng.normal(0, 0.15)), dy=float(irng.normal(0, 0.08)),
                         aspect=float(irng.uniform(0.8, 1.3)), head_cut=float(irng.uniform(0, 0.3)), feet_cut=float(irng.uniform(0, 0.3)))
        specs.append(spec("gallery", 0, 100000 + d, cam, 1, frame, irng, box=loose))
    return specs, train


def _query_gallery(cams: list[int]) -> list[str]:
    """Split one test identity's images (given their cameras) into query / gallery."""
    split = ["gallery"] * len(cams)
    for cam in sorted(set(cams), key=lambda c: (-cams.count(c), c)):
        queries = [k for k, s in enumerate(split) if s == "query"]
        if len(queries) >= MAX_QUERIES:
            break
        k = cams.index(cam)
        trial = split.copy()
        trial[k] = "query"
        gallery = [cams[j] for j, s in enumerate(trial) if s == "gallery"]
        query_cams = [cams[j] for j, s in enumerate(trial) if s == "query"]
        if all(any(g != q for g in gallery) for q in query_cams):
            split = trial
    return split


def _identity_for(spec: ImageSpec, identities: dict[int, Identity], seed: int) -> Identity:
    if spec.identity_key in identities:
        return identities[spec.identity_key]
    return sample_identity(0, np.random.default_rng([seed, 7, spec.identity_key]))


def _render_and_write(job: tuple) -> dict:
    """Render one image, write its JPEG and sidecar, return its attribute record."""
    out, spec, identity, camera, size, supersample = job
    result = render_person(identity, spec.pose, spec.yaw, camera, spec.box, spec.occlusion,
                           size=size, supersample=supersample, seed=spec.render_seed)
    ok, jpg = cv2.imencode(".jpg", result["image"][..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, camera.jpeg_quality])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {spec.relpath}")
    (out / spec.relpath).write_bytes(jpg.tobytes())
    save_npz(sidecar_path(out, spec.relpath), i=result["i"], u=result["u"], v=result["v"], parsing=result["parsing"], mask=result["mask"])
    rows = np.flatnonzero(result["mask"].any(axis=1))
    return {
        "relpath": spec.relpath, "split": spec.split, "pid": spec.pid, "camid": spec.camid,
        "identity_key": spec.identity_key, "view": spec.view, "yaw": round(spec.yaw, 4),
        **{f"pose_{k}": round(v, 6) for k, v in spec.pose.to_dict().items()},
        **{f"box_{k}": round(v, 6) for k, v in spec.box.to_dict().items()},
        "occlusion": spec.occlusion.kind, "occluded_fraction": round(float(result["occluded"].mean()), 6),
        "person_top": round(result["person_top"], 4), "person_bottom": round(result["person_bottom"], 4),
        "visible_top": int(rows[0]) if rows.size else -1, "visible_bottom": int(rows[-1]) if rows.size else -1,
        "mask_fraction": round(float(result["mask"].mean()), 6), "render_seed": spec.render_seed,
    }


def meta_json(seed: int, args: dict) -> dict:
    """The conventions a reader of the ground truth needs."""
    return {
        "generator": "priors.synthetic",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "args": args,
        "densepose_parts": {str(k): v for k, v in PART_NAMES.items()},
        "uv_convention": "U along the part (proximal->distal; head: crown->neck), V around it: front/back charts "
                         "V = psi/pi from the person's left side, head halves V 0 = face centre -> 1 = back; "
                         "the same (I,U,V) is the same surface point for every person and pose",
        "parsing_labels": list(LIP_LABELS),
        "parsing_groups": {
            "head": list(LIP_HEAD), "left_leg": list(LIP_LEFT_LEG), "right_leg": list(LIP_RIGHT_LEG),
            "lower_garment": list(LIP_LOWER_GARMENT), "bag": [LIP["bag"]],
        },
        "sidecar": {"i": "uint8 (H,W) DensePose part 0..24", "u": "float32 (H,W)", "v": "float32 (H,W)",
                    "parsing": "uint8 (H,W) LIP label", "mask": "bool (H,W) person incl. accessories"},
    }


def write_dataset(
    out: str | Path,
    ids: int,
    images_per_id: int,
    cameras: int,
    seed: int,
    size: tuple[int, int] = (128, 64),
    preview: str | Path | None = None,
    progress: bool = True,
    distractors: int | None = None,
    supersample: int = 2,
    workers: int = 1,
    occlusion: float = 0.1,
) -> dict:
    """Render a synthetic Market-1501 world into ``out`` (see the module docstring); returns a summary dict.

    ``distractors``: gallery images of pid 0 (default 5% of the test images); ``supersample``: internal
    render scale; ``workers`` > 1 renders in that many processes (same bytes as one); ``occlusion``: the
    probability that an image gets an occluder (:data:`~priors.synthetic.render.OCCLUDER_KINDS`).
    """
    from tqdm.auto import tqdm

    out = Path(out)
    start = time.perf_counter()
    specs, train = plan_dataset(ids, images_per_id, cameras, seed, distractors, occlusion)
    identities = {ident.pid: ident for ident in sample_identities(list(range(1, ids + 1)), seed)}
    cams = {c: sample_camera(c, seed) for c in range(1, cameras + 1)}
    for folder in FOLDERS.values():
        (out / folder).mkdir(parents=True, exist_ok=True)
        (out / "groundtruth" / folder).mkdir(parents=True, exist_ok=True)
    jobs = [(out, spec, _identity_for(spec, identities, seed), cams[spec.camid], size, supersample) for spec in specs]
    bar = dict(total=len(jobs), desc="synth", unit="img", disable=not progress)
    if workers > 1:  # per-image seeds: the same files whatever the number of workers
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            records = list(tqdm(pool.map(_render_and_write, jobs, chunksize=8), **bar))
    else:
        records = [_render_and_write(job) for job in tqdm(jobs, **bar)]
    args = {"ids": ids, "images_per_id": images_per_id, "cameras": cameras, "seed": seed, "size": list(size),
            "distractors": distractors, "supersample": supersample, "occlusion": occlusion}  # not workers: it does not change the files
    gt = out / "groundtruth"
    (gt / "meta.json").write_text(json.dumps(meta_json(seed, args), indent=1, sort_keys=True))
    attributes = {
        "identities": {str(p): identities[p].to_dict() for p in sorted(identities)},
        "train_pids": train,
        "cameras": {str(c): cams[c].to_dict() for c in sorted(cams)},
        "images": records,
    }
    (gt / "attributes.json").write_text(json.dumps(attributes, indent=None, sort_keys=True))
    elapsed = time.perf_counter() - start
    summary = {
        "out": str(out), "images": len(specs), "identities": ids, "train_ids": len(train), "test_ids": ids - len(train),
        **{split: sum(s.split == split for s in specs) for split in FOLDERS},
        "distractors": sum(s.pid == 0 for s in specs), "cameras": cameras, "size": list(size), "seed": seed,
        "seconds": round(elapsed, 3), "images_per_second": round(len(specs) / max(elapsed, 1e-9), 1),
    }
    if preview is not None:
        from .preview import write_preview

        summary["preview"] = str(write_preview(out, preview))
    return summary


def read_image_table(root: str | Path):
    """Per-image ground-truth attributes of a synthetic dataset as a pandas DataFrame (one row per image)."""
    import pandas as pd

    data = json.loads((Path(root) / "groundtruth" / "attributes.json").read_text())
    return pd.DataFrame(data["images"])
