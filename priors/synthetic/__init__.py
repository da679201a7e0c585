"""A synthetic re-ID world with ground-truth dense semantics, parsing and masks.

Procedural pedestrians (:mod:`.identity` attributes, :mod:`.body` 2.5D articulated body with
DensePose charts, :mod:`.texture` clothing as a function of the body surface, :mod:`.render` camera,
background, detection error and occlusion) rendered together with the ground truth an ideal
estimator would give: DensePose IUV, LIP-style parsing and the person mask. :mod:`.dataset` writes a
world in the Market-1501 layout with a ``groundtruth/`` sidecar that the ``oracle`` estimator
backends (:mod:`priors.backends.oracle`) read.

Public API::

    write_dataset(out, ids, images_per_id, cameras, seed, size=(128, 64), preview=None, progress=True) -> dict
    render_person(identity, pose, viewpoint, camera, box=BoxError(), occlusion=Occlusion(), size=(128, 64)) -> dict
    sample_identity(pid, rng), sample_identities(pids, seed), similar_identity(pid, base, rng)
    sample_camera(cam_id, seed), Camera.neutral(), Pose(...), BoxError(...), Occlusion(...)
    load_sidecar(root, relpath), sidecar_path(root, relpath), read_image_table(root), write_preview(root, png)
"""
from .body import VIEW_YAW, Pose
from .dataset import GENERATOR_VERSION, load_sidecar, plan_dataset, read_image_table, sidecar_path, write_dataset
from .identity import Identity, sample_identities, sample_identity, similar_identity
from .labels import LIP, LIP_LABELS, PART_NAMES, colour_iuv, colour_parsing
from .preview import write_preview
from .render import BoxError, Camera, Occlusion, render_person, sample_box_error, sample_camera, sample_occlusion

__all__ = [
    "GENERATOR_VERSION", "VIEW_YAW", "LIP", "LIP_LABELS", "PART_NAMES",
    "Identity", "Pose", "Camera", "BoxError", "Occlusion",
    "sample_identity", "sample_identities", "similar_identity", "sample_camera", "sample_box_error", "sample_occlusion",
    "render_person", "write_dataset", "plan_dataset", "load_sidecar", "sidecar_path", "read_image_table",
    "write_preview", "colour_iuv", "colour_parsing",
]
