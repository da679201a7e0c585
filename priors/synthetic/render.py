"""From a posed identity to a pedestrian crop: camera, background, detection error, occlusion.

:func:`render_person` draws the body of :mod:`priors.synthetic.body` at ``supersample`` times the
output size inside a detection box, textures it (:mod:`priors.synthetic.texture`), shades it with the
camera's light, downsamples it with area averaging over a camera-specific background, then applies
the camera (illumination gain, colour cast, gamma, low resolution, blur, noise) and an occasional
occluder. The ground truth goes through the same crop and is subsampled at the centre of every
``supersample`` x ``supersample`` block (nearest sample: labels and U, V are never interpolated).

Detection error imitates DPM boxes (Market-1501): loose or tight scale, shift, aspect change and now
and then a box that cuts the head or the feet off (:class:`BoxError`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from .body import VIEW_YAW, Pose, body_primitives, person_extent
from .raster import Buffers, View, rasterise_all
from .identity import Identity
from .texture import surface_appearance

SCENES = ("bikes", "plaza", "trees", "road")


@dataclass(frozen=True)
class Camera:
    """One camera of the network: illumination, colour cast, optics, and the scene behind the people."""

    cam_id: int = 1
    gain: float = 1.0
    cast: tuple[float, float, float] = (1.0, 1.0, 1.0)
    gamma: float = 1.0
    blur: float = 0.0  # Gaussian sigma, output pixels
    resolution: float = 1.0  # < 1: captured at this fraction of the output size, then upsampled
    noise: float = 0.0  # Gaussian sigma, 0..255 units
    jpeg_quality: int = 95
    light: tuple[float, float, float] = (0.35, -0.55, 0.76)
    ambient: float = 0.45
    scene: str = "plaza"
    scene_seed: int = 0
    views: tuple[float, float, float, float] = (0.25, 0.25, 0.25, 0.25)  # front, left, back, right

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def neutral(cls, cam_id: int = 1, ambient: float = 0.45) -> "Camera":
        """No cast, blur, noise or resolution loss: for tests and figures."""
        return cls(cam_id=cam_id, ambient=ambient, scene="plain")


def sample_camera(cam_id: int, seed: int) -> Camera:
    """Camera ``cam_id`` of the world ``seed`` (stable: the same camera looks the same in every image)."""
    rng = np.random.default_rng([seed, 2, cam_id])
    warm = rng.uniform(-0.1, 0.1)
    light = np.array([rng.uniform(-0.7, 0.7), rng.uniform(-0.8, -0.2), rng.uniform(0.4, 0.9)])
    dominant = rng.choice([(0.4, 0.1, 0.4, 0.1), (0.1, 0.4, 0.1, 0.4), (0.25, 0.25, 0.25, 0.25), (0.35, 0.15, 0.35, 0.15)])
    return Camera(
        cam_id=cam_id,
        gain=float(rng.uniform(0.75, 1.2)),
        cast=tuple(float(x) for x in np.clip(1 + np.array([warm, 0.0, -warm]) + rng.uniform(-0.05, 0.05, 3), 0.75, 1.25)),
        gamma=float(rng.uniform(0.85, 1.15)),
        blur=float(rng.choice([0.0, 0.4, 0.7, 1.0], p=[0.3, 0.3, 0.25, 0.15])),
        resolution=float(rng.choice([1.0, 0.8, 0.6], p=[0.5, 0.3, 0.2])),
        noise=float(rng.uniform(1.5, 5.0)),
        jpeg_quality=int(rng.integers(75, 96)),
        light=tuple(float(x) for x in light / np.linalg.norm(light)),
        ambient=float(rng.uniform(0.4, 0.6)),
        scene=str(SCENES[(cam_id - 1) % len(SCENES)] if rng.random() < 0.7 else rng.choice(SCENES)),
        scene_seed=int(rng.integers(0, 2**31)),
        views=tuple(float(x) for x in dominant),
    )


@dataclass(frozen=True)
class BoxError:
    """Detection-box error relative to the ideal box around the person.

    ``scale``: box height / person height; ``dx``, ``dy``: shift in box widths / heights; ``aspect``:
    box width relative to the output aspect; ``head_cut`` / ``feet_cut``: fraction of the person's
    height the box misses at the top / bottom.
    """

    scale: float = 1.1
    dx: float = 0.0
    dy: float = 0.0
    aspect: float = 1.0
    head_cut: float = 0.0
    feet_cut: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def sample_box_error(rng: np.random.Generator) -> BoxError:
    """DPM-like boxes: mostly fine, sometimes loose, shifted, or cutting the head or the feet."""
    cut = rng.random()
    return BoxError(
        scale=float(rng.uniform(1.02, 1.25)),
        dx=float(rng.normal(0, 0.06)),
        dy=float(rng.normal(0, 0.025)),
        aspect=float(rng.uniform(0.88, 1.15)),
        head_cut=float(rng.uniform(0.05, 0.14)) if cut < 0.06 else 0.0,
        feet_cut=float(rng.uniform(0.06, 0.2)) if 0.06 <= cut < 0.14 else 0.0,
    )


@dataclass(frozen=True)
class Occlusion:
    """An object between the camera and the person.

    'pole', 'bike', 'bar' (one rail), 'block' (bench, car), 'railing' (top rail at the waist or thighs,
    bottom rail and balusters), 'parapet' (a solid wall from the waist or thighs down: the person is cut
    off there), 'bag' (a carried bag in front of the thighs) or 'person' (a second, nearer pedestrian
    beside and in front of this one; ``position`` < 0.5 puts them on the left).
    """

    kind: str = "none"
    position: float = 0.5  # where along the image (x for pole/bike, y for bar) as a fraction
    extent: float = 0.2  # thickness as a fraction of the image
    colour: tuple[int, int, int] = (90, 90, 95)

    def to_dict(self) -> dict:
        return asdict(self)


OCCLUDER_KINDS = ("pole", "bike", "bar", "block", "railing", "parapet", "bag", "person")
OCCLUDER_WEIGHTS = (0.15, 0.15, 0.05, 0.1, 0.15, 0.15, 0.1, 0.15)


def sample_occlusion(rng: np.random.Generator, probability: float = 0.1) -> Occlusion:
    if rng.random() >= probability:
        return Occlusion()
    kind = str(rng.choice(list(OCCLUDER_KINDS), p=list(OCCLUDER_WEIGHTS)))
    base = {"pole": (95, 95, 100), "bike": (45, 45, 50), "bar": (120, 120, 118), "block": (110, 100, 90),
            "railing": (150, 150, 145), "parapet": (165, 160, 150), "bag": (70, 50, 40), "person": (0, 0, 0)}[kind]
    colour = tuple(int(c) for c in np.clip(np.asarray(base) * rng.uniform(0.6, 1.4) + rng.uniform(-15, 15, 3), 0, 255))
    return Occlusion(kind, float(rng.uniform(0.15, 0.85)), float(rng.uniform(0.06, 0.3)), colour)  # type: ignore[arg-type]


def _draw_occluder(occ: Occlusion, height: int, width: int) -> np.ndarray:
    """uint8 mask (H, W) of the occluder."""
    m = np.zeros((height, width), np.uint8)
    if occ.kind == "pole":
        x, half = int(occ.position * width), max(1, int(occ.extent * width * 0.25))
        cv2.rectangle(m, (x - half, 0), (x + half, height), 1, -1)
    elif occ.kind == "bike":
        r = int(height * (0.13 + 0.1 * occ.extent))
        cx, cy = int(occ.position * width), height - r // 2
        for ox in (-r, r):
            cv2.circle(m, (cx + ox, cy), r, 1, max(2, r // 5))
        cv2.line(m, (cx - r, cy), (cx, cy - r), 1, 2)
        cv2.line(m, (cx, cy - r), (cx + r, cy), 1, 2)
    elif occ.kind == "bar":
        y, half = int(height * (0.45 + 0.35 * occ.position)), max(1, int(occ.extent * height * 0.12))
        cv2.rectangle(m, (0, y - half), (width, y + half), 1, -1)
    elif occ.kind == "block":
        top = int(height * (1 - occ.extent))
        side = occ.position < 0.5
        cv2.rectangle(m, (0 if side else width // 3, top), (2 * width // 3 if side else width, height), 1, -1)
    elif occ.kind in ("railing", "parapet"):
        top = int(height * (0.5 + 0.25 * occ.position))  # waist (0.5) to knees (0.75)
        if occ.kind == "parapet":
            cv2.rectangle(m, (0, top), (width, height), 1, -1)
        else:
            rail = max(2, int(height * 0.025))
            cv2.rectangle(m, (0, top), (width, top + rail), 1, -1)
            cv2.rectangle(m, (0, height - 3 * rail), (width, height - 2 * rail), 1, -1)
            step = max(4, int(width * (0.12 + 0.2 * occ.extent)))
            for x in range(int(step * occ.position) % step, width, step):
                cv2.rectangle(m, (x, top), (x + max(1, rail // 2), height), 1, -1)
    elif occ.kind == "bag":
        cx, cy = int(width * (0.3 + 0.4 * occ.position)), int(height * 0.58)
        bw, bh = int(width * (0.22 + 0.5 * occ.extent)), int(height * (0.12 + 0.25 * occ.extent))
        cv2.rectangle(m, (cx - bw // 2, cy - bh // 2), (cx + bw // 2, cy + bh // 2), 1, -1)
        cv2.line(m, (cx - bw // 4, cy - bh // 2), (cx, cy - bh), 1, max(1, width // 40))
    return m


def _occluding_person(occ: Occlusion, camera: Camera, size: tuple[int, int], supersample: int, seed: int):
    """Image (H,W,3) float and mask (H,W) bool of a nearer pedestrian at the crop's left or right edge."""
    from .identity import sample_identity

    rng = np.random.default_rng([seed, 11])
    other = sample_identity(0, rng)
    near = BoxError(scale=0.85 - 0.15 * occ.extent, dx=(1 if occ.position < 0.5 else -1) * (0.45 + 0.3 * occ.extent),
                    dy=-0.05 - 0.1 * occ.extent)
    yaw = float(rng.choice([0.0, 90.0, 180.0, 270.0]))
    out = render_person(other, Pose(phase=float(rng.uniform(0, 2 * np.pi))), yaw, camera, near, Occlusion(), size,
                        supersample, seed + 1, background=False, optics=False)
    return out["image"], out["mask"]


WALLS = np.array([(150, 148, 140), (190, 188, 180), (132, 92, 78), (72, 80, 90), (200, 186, 160), (214, 214, 208),
                  (92, 92, 90), (160, 150, 120), (110, 120, 110)], np.float32)
GROUNDS = np.array([(128, 128, 124), (160, 158, 150), (150, 116, 104), (92, 92, 94), (176, 170, 158), (118, 120, 112)], np.float32)


def render_background(camera: Camera, height: int, width: int, ground_row: float, rng: np.random.Generator) -> np.ndarray:
    """Scene behind the person (float32 RGB 0..255): ground below a horizon, clutter of the camera's scene.

    The camera fixes the scene's palette and kind ('bikes', 'plaza', 'trees', 'road'); each image
    moves the horizon and the clutter, as a person walks through the field of view.
    """
    srng = np.random.default_rng(camera.scene_seed)
    ground = GROUNDS[srng.integers(len(GROUNDS))] * srng.uniform(0.85, 1.1)
    wall = WALLS[srng.integers(len(WALLS))] * srng.uniform(0.85, 1.1)
    img = np.empty((height, width, 3), np.float32)
    if camera.scene == "plain":
        img[:] = 128
        return img
    horizon = int(np.clip(ground_row - height * rng.uniform(0.3, 0.6), 0, height))
    img[:horizon] = wall
    img[horizon:] = ground
    col = lambda c: tuple(float(x) for x in c)  # noqa: E731
    shift = int(rng.integers(0, 1000))
    if camera.scene in ("plaza", "road", "bikes"):  # tiles / lane markings receding to the horizon
        for k in range(1, 8):
            y = int(horizon + (height - horizon) * (k / 8) ** 1.6)
            cv2.line(img, (0, y), (width, y), col(ground * 0.85), 1)
        if camera.scene == "road":
            cv2.rectangle(img, (0, horizon), (width, horizon + max(2, height // 30)), col(ground * 1.3), -1)
        step = int(srng.integers(10, 24))
        for x in range(-shift % step - step, width, step):  # windows / pillars of a building
            cv2.rectangle(img, (x, max(0, horizon - height // 3)), (x + step // 2, horizon - 3), col(wall * srng.uniform(0.55, 0.8)), -1)
    if camera.scene == "trees":
        for _ in range(4):
            cx, cy = int(rng.uniform(-0.2, 1.2) * width), int(horizon - rng.uniform(0.05, 0.3) * height)
            green = np.array([62, 88, 52]) * srng.uniform(0.7, 1.2) * rng.uniform(0.85, 1.15)
            cv2.rectangle(img, (cx - 2, cy), (cx + 2, horizon + 4), (70.0, 58.0, 46.0), -1)
            axes = (int(width * rng.uniform(0.2, 0.45)), int(height * rng.uniform(0.1, 0.22)))
            cv2.ellipse(img, (cx, cy), axes, 0, 0, 360, col(green), -1)
    if camera.scene in ("bikes", "plaza") and rng.random() < 0.85:  # parked bicycles behind the person
        for _ in range(int(rng.integers(1, 5))):
            r = int(height * rng.uniform(0.08, 0.13))
            cx, cy = int(rng.uniform(0, 1) * width), int(horizon + rng.uniform(0.0, 0.5) * (height - horizon))
            c = col(rng.uniform(20, 90) * (1 + rng.uniform(-0.3, 0.3, 3)))
            for ox in (-r, r):
                cv2.circle(img, (cx + ox, cy), r, c, 1)
            cv2.line(img, (cx - r, cy), (cx, cy - r), c, 1)
            cv2.line(img, (cx, cy - r), (cx + r, cy), c, 1)
            cv2.line(img, (cx, cy - r), (cx - r // 3, cy - r - r // 2), c, 1)
    # low-frequency shading and fine grain, so no two backgrounds are flat copies
    low = cv2.resize(rng.uniform(0.8, 1.15, (3, 2)).astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    img *= low[..., None]
    img += rng.normal(0, 4, (height, width, 1)).astype(np.float32)
    return img


def _yaw_of(viewpoint: str | float) -> float:
    return float(VIEW_YAW[viewpoint]) if isinstance(viewpoint, str) else float(viewpoint)


def _crop_box(extent: tuple[float, float, float, float], box: BoxError, size: tuple[int, int]):
    """(left, top, width, height) of the detection box in the view frame (body units)."""
    H, W = size
    xl, xr, yt, yb = extent
    ph = yb - yt
    margin = (box.scale - 1.0) * ph / 2
    top = yt - margin + box.head_cut * ph
    bottom = yb + margin - box.feet_cut * ph
    box_h = bottom - top
    top = top + box.dy * box_h
    box_w = box_h * (W / H) * box.aspect
    left = (xl + xr) / 2 - box_w / 2 + box.dx * box_w
    return left, top, box_w, box_h


JOINTS = ("shoulder", "elbow", "wrist", "hand_tip", "hip", "knee", "ankle", "heel", "toe")
"""Joints of :func:`joint_positions`, per side (``left_*``, ``right_*``), plus ``head_centre``, ``nose``,
``left_ear``, ``right_ear``."""


def joint_positions(identity: Identity, pose: Pose, viewpoint: str | float, box: BoxError = BoxError(),
                    size: tuple[int, int] = (128, 64)) -> dict[str, np.ndarray]:
    """Where the skeleton's joints project in the crop ``render_person`` draws with the same arguments.

    Returns name -> ``(x, y, depth)``: ``x, y`` in the crop's pixel-index coordinates (pixel ``(r, c)``
    has centre ``(c, r)``), ``depth`` in pixels, growing *away* from the camera (mediapipe's sign).
    Ground truth for measuring a pose estimator's geometry apart from its landmark error; the joints of
    a limb are its primitive's axis ends (e.g. ``left_elbow`` = the left upper arm's distal end).
    """
    H, W = size
    yaw = _yaw_of(viewpoint)
    prims = body_primitives(identity, pose)
    left, top, box_w, box_h = _crop_box(person_extent(prims, yaw), box, size)
    view = View(yaw, W / box_w, H / box_h, left, top)
    body = {p.parts: p for p in prims if p.kind != "acc"}
    points: dict[str, tuple[float, float, float]] = {}
    for side, arm, leg, hand, foot in (("left", (17, 15), (8, 10), 4, 5), ("right", (18, 16), (7, 9), 3, 6)):
        lower_arm = (arm[0] + 4, arm[1] + 4)
        lower_leg = (leg[0] + 4, leg[1] + 4)
        points.update({f"{side}_shoulder": body[arm].p0, f"{side}_elbow": body[arm].p1,
                       f"{side}_wrist": body[lower_arm].p1, f"{side}_hand_tip": body[(hand, hand)].p1,
                       f"{side}_hip": body[leg].p0, f"{side}_knee": body[leg].p1, f"{side}_ankle": body[lower_leg].p1,
                       f"{side}_heel": body[(foot, foot)].p0, f"{side}_toe": body[(foot, foot)].p1})
    head = next(p for p in prims if p.kind == "head")
    centre = (np.asarray(head.p0) + np.asarray(head.p1)) / 2
    radius = max(head.radii)
    points["head_centre"] = tuple(centre)
    points["nose"] = tuple(centre + (0.0, 0.0, radius * head.depth_ratio))
    points["left_ear"] = tuple(centre + (radius, 0.0, 0.0))
    points["right_ear"] = tuple(centre - (radius, 0.0, 0.0))
    out = {}
    for name, p in points.items():
        xv, y, zv = view.project(np.asarray(p))
        out[name] = np.array([(xv - view.left) * view.scale_x - 0.5, (y - view.top) * view.scale_y - 0.5,
                              -zv * view.scale_x])
    return out


def render_person(
    identity: Identity,
    pose: Pose,
    viewpoint: str | float,
    camera: Camera,
    box: BoxError = BoxError(),
    occlusion: Occlusion = Occlusion(),
    size: tuple[int, int] = (128, 64),
    supersample: int = 2,
    seed: int = 0,
    background: bool = True,
    optics: bool = True,
) -> dict:
    """Render one pedestrian crop and its ground truth.

    ``viewpoint``: 'front' | 'left' | 'back' | 'right' or a yaw in degrees (0 = front, 90 = the
    person's left side faces the camera). ``seed`` drives the background and the sensor noise;
    ``optics=False`` returns the float image before the camera (an occluder for another crop).

    Returns a dict: ``image`` (H,W,3) uint8 RGB; ``i`` (H,W) uint8 DensePose part; ``u``, ``v`` (H,W)
    float32 (0 on background); ``parsing`` (H,W) uint8 LIP label; ``mask`` (H,W) bool person incl.
    accessories; ``person_top``/``person_bottom`` (float, output rows, may lie outside the crop when
    the box cuts the person); ``occluded`` (H,W) bool.
    """
    H, W = size
    s = int(supersample)
    rng = np.random.default_rng(seed)
    yaw = _yaw_of(viewpoint)
    prims = body_primitives(identity, pose)
    xl, xr, yt, yb = person_extent(prims, yaw)
    left, top, box_w, box_h = _crop_box((xl, xr, yt, yb), box, size)
    bottom = top + box_h
    sy, sx = H * s / box_h, W * s / box_w
    # the canvas covers the box and the whole person, padded in whole output pixels
    pad = lambda gap: int(np.ceil(max(gap, 0.0) + 2)) * s  # noqa: E731
    pt, pb = pad((top - yt) * sy / s), pad((yb - bottom) * sy / s)
    pl, pr = pad((left - xl) * sx / s), pad((xr - left - box_w) * sx / s)
    buf = Buffers.empty(H * s + pt + pb, W * s + pl + pr)
    view = View(yaw, sx, sy, left - pl / sx, top - pt / sy, camera.light, camera.ambient)
    rasterise_all(prims, view, buf)
    rows = np.flatnonzero(buf.layer.any(axis=1))
    person_top, person_bottom = (rows[0] - pt) / s, (rows[-1] + 1 - pt) / s
    crop = (slice(pt, pt + H * s), slice(pl, pl + W * s))
    layer = buf.layer[crop]
    fg = layer > 0
    colour = np.zeros((H * s, W * s, 3), np.float32)
    albedo, labels = surface_appearance(identity, layer[fg], buf.u_app[crop][fg], buf.v_app[crop][fg])
    colour[fg] = albedo * buf.shade[crop][fg][:, None] * 255.0
    parsing_full = np.zeros((H * s, W * s), np.uint8)
    parsing_full[fg] = labels
    alpha = cv2.resize(fg.astype(np.float32), (W, H), interpolation=cv2.INTER_AREA)
    person = cv2.resize(colour, (W, H), interpolation=cv2.INTER_AREA)
    sample = (slice(s // 2, None, s), slice(s // 2, None, s))
    i = buf.i[crop][sample].copy()
    u = buf.u[crop][sample].copy()
    v = buf.v[crop][sample].copy()
    parsing = parsing_full[sample].copy()
    mask = fg[sample].copy()
    if background:
        bg = render_background(camera, H, W, ground_row=min(person_bottom, H + 5), rng=rng)
        _contact_shadow(bg, mask, person_bottom)
        img = person + (1.0 - alpha[..., None]) * bg
    else:
        img = person
    if occlusion.kind == "person":
        other, occluded = _occluding_person(occlusion, camera, size, supersample, seed)
        img = np.where(occluded[..., None], other, img)
    elif occlusion.kind != "none":
        occluded = _draw_occluder(occlusion, H, W).astype(bool)
    else:
        occluded = np.zeros((H, W), bool)
    if occluded.any() and occlusion.kind != "person":
        shade = np.linspace(0.8, 1.15, H, dtype=np.float32)[:, None, None]
        img = np.where(occluded[..., None], np.asarray(occlusion.colour, np.float32) * shade, img)
    if occluded.any():
        i[occluded], u[occluded], v[occluded], parsing[occluded], mask[occluded] = 0, 0, 0, 0, False
    # an occluder for another crop gets no camera yet: it is applied once, to the whole crop
    image = apply_camera(img, camera, rng) if optics else img
    return {
        "image": image, "i": i, "u": u, "v": v, "parsing": parsing, "mask": mask, "occluded": occluded,
        "person_top": float(person_top), "person_bottom": float(person_bottom), "yaw": yaw,
    }


def _contact_shadow(bg: np.ndarray, mask: np.ndarray, person_bottom: float) -> None:
    """Darken the ground under the feet (in place): a soft ellipse around the lowest person pixels."""
    H, W = mask.shape
    if person_bottom > H + 2 or not mask.any():
        return
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask[max(rows[-1] - H // 12, 0):rows[-1] + 1].any(axis=0))
    shadow = np.zeros((H, W), np.float32)
    centre = (int(round((cols[0] + cols[-1]) / 2)), int(round(person_bottom - 1)))
    cv2.ellipse(shadow, centre, (max(2, int((cols[-1] - cols[0]) * 0.6) + 2), max(1, H // 40)), 0, 0, 360, 1.0, -1)
    shadow = cv2.GaussianBlur(shadow, (0, 0), max(1.0, H / 80))
    bg *= (1.0 - 0.45 * shadow)[..., None]


def apply_camera(img: np.ndarray, camera: Camera, rng: np.random.Generator) -> np.ndarray:
    """Illumination gain, colour cast, gamma, resolution loss, blur and noise -> uint8 RGB."""
    H, W = img.shape[:2]
    img = img * (camera.gain * np.asarray(camera.cast, np.float32))
    if camera.gamma != 1.0:
        img = 255.0 * np.power(np.clip(img, 0, 255) / 255.0, camera.gamma)
    if camera.resolution < 1.0:
        small = (max(1, round(W * camera.resolution)), max(1, round(H * camera.resolution)))
        img = cv2.resize(cv2.resize(img, small, interpolation=cv2.INTER_AREA), (W, H), interpolation=cv2.INTER_LINEAR)
    if camera.blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), camera.blur)
    if camera.noise > 0:
        img = img + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(camera.noise)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


__all__ = [
    "Camera", "BoxError", "Occlusion", "Pose", "sample_camera", "sample_box_error", "sample_occlusion",
    "render_background", "render_person", "apply_camera", "joint_positions", "JOINTS",
]
