"""Z-buffered rasterisation of the body primitives, with the DensePose chart of every pixel.

For a pixel at lateral offset ``x`` (in units of the local radius ``a``) from a primitive's projected
axis, the visible surface point is the nearer root ``z`` of the cross-section ellipse turned by the
yaw (c, s = cos, sin)::

    (x c + z s)^2 + (-x s + z c)^2 / k^2 = 1          (body frame: x_b^2 + z_b^2 / k^2 = 1)

-- one square root per pixel; then ``psi = atan2(z_b / k, x_b)`` is the angle around the axis in
the body frame, which picks the chart (front/back half, or left/right half of the head) and gives V
(see :mod:`priors.synthetic.body`). U is the position along the axis.

Two implementations of the same formulas:

* :func:`rasterise` draws one primitive over its pixel box (readable reference);
* :func:`rasterise_all` draws all primitives of an image in one batch: every candidate pixel of
  every primitive in one flat array, per-pixel primitive parameters gathered by index, the z-test
  resolved with ``np.maximum.at``. Same output (up to float rounding), a few times faster, as the
  per-primitive version is dominated by numpy's per-call overhead on small boxes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .body import Primitive

KINDS = {"limb": 0, "head": 1, "single": 2, "acc": 3}
PROFILE_KNOTS = 33


@dataclass
class Buffers:
    """Render target at the internal resolution: appearance z-buffer and body (DensePose) z-buffer."""

    z_app: np.ndarray
    layer: np.ndarray
    u_app: np.ndarray
    v_app: np.ndarray
    shade: np.ndarray
    z_body: np.ndarray
    i: np.ndarray
    u: np.ndarray
    v: np.ndarray

    @classmethod
    def empty(cls, height: int, width: int) -> "Buffers":
        zf = lambda: np.full((height, width), -np.inf, np.float32)  # noqa: E731
        f = lambda: np.zeros((height, width), np.float32)  # noqa: E731
        b = lambda: np.zeros((height, width), np.uint8)  # noqa: E731
        return cls(zf(), b(), f(), f(), f(), zf(), b(), f(), f())


@dataclass(frozen=True)
class View:
    """Orthographic camera: yaw (degrees) and the affine map body units -> pixels (x, y scales, offsets)."""

    yaw: float
    scale_x: float
    scale_y: float
    left: float  # body-frame x_view at pixel column 0
    top: float  # body-frame y at pixel row 0
    light: tuple[float, float, float] = (0.35, -0.55, 0.76)  # in the view frame (x right, y down, z to camera)
    ambient: float = 0.45

    def project(self, p: np.ndarray) -> np.ndarray:
        """(..., 3) body-frame points -> (..., 3) = (x_view, y, z_view); z_view grows toward the camera."""
        p = np.asarray(p, float)
        c, s = np.cos(np.radians(self.yaw)), np.sin(np.radians(self.yaw))
        return np.stack([p[..., 0] * c - p[..., 2] * s, p[..., 1], p[..., 0] * s + p[..., 2] * c], axis=-1)


# ------------------------------------------------------------------ formulas shared by both rasterisers
# (parameters are Python scalars for one primitive, or per-pixel arrays in the batch)


def _inside(along, lateral, length, a_t, w_scale, cap0, cap1):
    """Silhouette test of a tapered capsule; returns (inside, t, e, across)."""
    clamped = np.minimum(np.maximum(along, 0.0), length)
    excess = along - clamped  # exactly 0 between the ends (flat ends, cap 0, rely on it)
    t = clamped / length
    w_t = np.maximum(a_t * w_scale, 1e-6)
    cap = np.where(excess < 0, cap0, cap1)
    e = np.where(cap > 0, excess / np.maximum(cap * w_t, 1e-6), np.where(excess == 0, 0.0, 2.0))
    across = lateral / w_t
    return across * across + e * e <= 1.0, t, e, across


def _visible_root(across, e, w_scale, k, c, s):
    """(ring, x, z): cap shrink factor and the visible surface point in units of the local radius."""
    ring = np.sqrt(np.maximum(1.0 - e * e, 0.0))
    x = across * w_scale / np.maximum(ring, 1e-6)
    ik2 = 1.0 / (k * k)
    qa = s * s + c * c * ik2
    qb = 2.0 * c * s * (1.0 - ik2) * x
    qc = x * x * (c * c + s * s * ik2) - 1.0
    z = (-qb + np.sqrt(np.maximum(qb * qb - 4.0 * qa * qc, 0.0))) / (2.0 * qa)
    return ring, x, z


def _surface(x, z, e, ring, k, c, s, ex, ey, view: View, kind, back, front):
    """Chart (part index), V and shading of visible points (``kind`` a KINDS code, scalar or array)."""
    xb, zb = x * c + z * s, -x * s + z * c  # body frame, units of a
    psi = np.arctan2(zb / k, xb)  # (-pi, pi]
    nbz = zb / (k * k)  # ellipse normal, body frame: (x_b, z_b / k^2)
    norm = np.sqrt(xb * xb + nbz * nbz) + 1e-6
    lx, ly, lz = view.light
    lam = ring * ((xb * c - nbz * s) * lx + (xb * s + nbz * c) * lz) / norm + e * (ex * lx + ey * ly)
    shade = view.ambient + (1 - view.ambient) * np.maximum(lam, 0.0)
    p = psi / np.pi
    v_limb = np.where(zb >= 0, p, 1.0 + p)  # front chart: from the left side (0) to the right side (1)
    v_head = np.where(xb >= 0, 0.5 - p, np.where(psi >= 0, p - 0.5, p + 1.5))  # face centre 0 -> back 1
    v_single = np.where(psi >= 0, p, p + 2.0) / 2.0
    head_part = np.where(kind == KINDS["head"], np.where(xb >= 0, front, back), back)
    part = np.where(kind == KINDS["limb"], np.where(zb >= 0, front, back), head_part)
    v = np.where(kind == KINDS["limb"], v_limb, np.where(kind == KINDS["head"], v_head, v_single))
    return part, np.minimum(np.maximum(v, 0.0), 1.0).astype(np.float32), shade.astype(np.float32)


def _write(buf: Buffers, flat, depth, part, u, v, shade, win_app, win_body, body_surface) -> None:
    f = flat[win_app]
    buf.z_app.reshape(-1)[f] = depth[win_app]
    buf.layer.reshape(-1)[f] = part[win_app]
    buf.u_app.reshape(-1)[f] = u[win_app]
    buf.v_app.reshape(-1)[f] = v[win_app]
    buf.shade.reshape(-1)[f] = shade[win_app]
    f = flat[win_body]
    buf.z_body.reshape(-1)[f] = depth[win_body]
    on_body = body_surface[win_body] if np.ndim(body_surface) else np.full(f.shape, bool(body_surface))
    buf.i.reshape(-1)[f] = np.where(on_body, part[win_body], 0)  # bags hide the body surface: I = 0 there
    buf.u.reshape(-1)[f] = np.where(on_body, u[win_body], 0)
    buf.v.reshape(-1)[f] = np.where(on_body, v[win_body], 0)


def resampled_profile(prim: Primitive) -> np.ndarray:
    """The radius profile a(t) on ``PROFILE_KNOTS`` uniform knots (both rasterisers interpolate this)."""
    return np.interp(np.linspace(0.0, 1.0, PROFILE_KNOTS), prim.ts, prim.radii).astype(np.float32)


def _profile_at(profile: np.ndarray, t):
    g = t * (PROFILE_KNOTS - 1)
    i0 = np.minimum(g.astype(np.intp), PROFILE_KNOTS - 2)
    frac = (g - i0).astype(np.float32)
    return profile[..., i0] * (1 - frac) + profile[..., i0 + 1] * frac


def _pixel_box(x0, y0, x1, y1, rmax, view: View, H: int, W: int):
    cols = np.clip(np.floor((np.array([min(x0, x1) - rmax, max(x0, x1) + rmax]) - view.left) * view.scale_x).astype(int) + (0, 2), 0, W)
    rows = np.clip(np.floor((np.array([min(y0, y1) - rmax, max(y0, y1) + rmax]) - view.top) * view.scale_y).astype(int) + (0, 2), 0, H)
    return rows, cols


def rasterise(prim: Primitive, view: View, buf: Buffers) -> None:
    """Draw one primitive into ``buf`` (z-buffered): the readable reference of :func:`rasterise_all`."""
    H, W = buf.layer.shape
    c, s = float(np.cos(np.radians(view.yaw))), float(np.sin(np.radians(view.yaw)))
    (x0, y0, z0), (x1, y1, z1) = view.project(prim.p0), view.project(prim.p1)
    k = prim.depth_ratio
    w_scale = float(np.sqrt(c * c + (k * s) ** 2))  # projected half-width / a
    wmax = max(prim.radii) * w_scale
    rows, cols = _pixel_box(x0, y0, x1, y1, wmax * max(1.0, *prim.caps), view, H, W)
    if cols[1] <= cols[0] or rows[1] <= rows[0]:
        return
    X = ((np.arange(cols[0], cols[1]) + 0.5) / view.scale_x + view.left - x0).astype(np.float32)[None, :]
    Y = ((np.arange(rows[0], rows[1]) + 0.5) / view.scale_y + view.top - y0).astype(np.float32)[:, None]
    length = float(max(np.hypot(x1 - x0, y1 - y0), 1e-6))
    ex, ey = (x1 - x0) / length, (y1 - y0) / length
    along, lateral = X * ex + Y * ey, X * ey - Y * ex  # lateral + = image right for a limb pointing down
    ri, ci = np.nonzero((np.abs(lateral) <= wmax) & (along >= -wmax * prim.caps[0]) & (along <= length + wmax * prim.caps[1]))
    along, lateral = along[ri, ci], lateral[ri, ci]
    a_t = _profile_at(resampled_profile(prim), np.minimum(np.maximum(along, 0.0), length) / length)
    inside, t, e, across = _inside(along, lateral, length, a_t, w_scale, *prim.caps)
    ri, ci, t, e, across, a_t = ri[inside], ci[inside], t[inside], e[inside], across[inside], a_t[inside]
    ring, x, z = _visible_root(across, e, w_scale, k, c, s)
    depth = (z0 + t * (z1 - z0) + a_t * ring * z).astype(np.float32)
    flat = (ri + rows[0]) * W + (ci + cols[0])
    win_app = depth > buf.z_app.reshape(-1)[flat]
    win_body = np.zeros_like(win_app) if prim.cloth else depth > buf.z_body.reshape(-1)[flat]
    part, v, shade = _surface(x, z, e, ring, k, c, s, ex, ey, view, KINDS[prim.kind], *prim.parts)
    u = (prim.u_range[0] + (prim.u_range[1] - prim.u_range[0]) * t).astype(np.float32)
    _write(buf, flat, depth, part, u, v, shade, win_app, win_body, prim.kind != "acc")


def rasterise_all(prims: list[Primitive], view: View, buf: Buffers) -> None:
    """Draw all ``prims`` into ``buf`` in one vectorised batch (same result as :func:`rasterise` in a loop)."""
    H, W = buf.layer.shape
    c, s = float(np.cos(np.radians(view.yaw))), float(np.sin(np.radians(view.yaw)))
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731  (float32 math, as the reference's scalars give)
    P = len(prims)
    p0 = view.project(np.array([p.p0 for p in prims]))
    p1 = view.project(np.array([p.p1 for p in prims]))
    k = np.array([p.depth_ratio for p in prims])
    w_scale = np.sqrt(c * c + (k * s) ** 2)
    caps = np.array([p.caps for p in prims])
    wmax = np.array([max(p.radii) for p in prims]) * w_scale
    # all radius profiles on uniform knots with one np.interp: primitive j's knots are shifted to [2j, 2j + 1]
    shift = [2.0 * j for j, p in enumerate(prims) for _ in p.ts]
    knots = (np.linspace(0.0, 1.0, PROFILE_KNOTS)[None, :] + 2.0 * np.arange(P)[:, None]).ravel()
    profile = np.interp(knots, np.add([t for p in prims for t in p.ts], shift), [r for p in prims for r in p.radii])
    profile = profile.reshape(P, PROFILE_KNOTS).astype(np.float32)
    # rows of each primitive's box, and per row the columns the swept band (segment +- reach) can touch
    reach = wmax * np.maximum(1.0, caps.max(axis=1))
    top_row = np.clip(np.floor((np.minimum(p0[:, 1], p1[:, 1]) - reach - view.top) * view.scale_y).astype(int), 0, H)
    end_row = np.clip(np.floor((np.maximum(p0[:, 1], p1[:, 1]) + reach - view.top) * view.scale_y).astype(int) + 2, 0, H)
    n_rows = np.maximum(end_row - top_row, 0)
    row_pid = np.repeat(np.arange(P), n_rows)
    row = top_row[row_pid] + np.arange(row_pid.size) - np.repeat(np.cumsum(n_rows) - n_rows, n_rows)
    y = (row + 0.5) / view.scale_y + view.top
    dy = (p1[:, 1] - p0[:, 1])[row_pid]
    flat_seg = np.abs(dy) < 1e-9
    safe_dy = np.where(flat_seg, 1.0, dy)
    ta, tb = (y - reach[row_pid] - p0[row_pid, 1]) / safe_dy, (y + reach[row_pid] - p0[row_pid, 1]) / safe_dy
    t_lo = np.where(flat_seg, 0.0, np.clip(np.minimum(ta, tb), 0.0, 1.0))
    t_hi = np.where(flat_seg, 1.0, np.clip(np.maximum(ta, tb), 0.0, 1.0))
    dx = (p1[:, 0] - p0[:, 0])[row_pid]
    xa, xb_ = p0[row_pid, 0] + t_lo * dx, p0[row_pid, 0] + t_hi * dx
    col_lo = np.clip(np.floor((np.minimum(xa, xb_) - reach[row_pid] - view.left) * view.scale_x).astype(int), 0, W)
    col_hi = np.clip(np.floor((np.maximum(xa, xb_) + reach[row_pid] - view.left) * view.scale_x).astype(int) + 2, 0, W)
    width = np.maximum(col_hi - col_lo, 0)
    # every candidate pixel of every primitive, flat, with its primitive index
    pix_row = np.repeat(np.arange(row.size), width)
    col = col_lo[pix_row] + np.arange(pix_row.size) - np.repeat(np.cumsum(width) - width, width)
    y_rel = f32(y - p0[row_pid, 1])  # row centre relative to the primitive's start
    pid, row = row_pid[pix_row], row[pix_row]
    d = p1[:, :2] - p0[:, :2]
    length = np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-6)
    ex, ey = f32(d[:, 0] / length), f32(d[:, 1] / length)
    length, w_scale, wmax, caps, k = f32(length), f32(w_scale), f32(wmax), f32(caps), f32(k)
    z0, dz = f32(p0[:, 2]), f32(p1[:, 2] - p0[:, 2])
    # pixel centre relative to the primitive's start, float32 (exact pixel grid in float64 per primitive/row)
    X = col.astype(np.float32) * np.float32(1.0 / view.scale_x) + f32((0.5 / view.scale_x + view.left) - p0[:, 0])[pid]
    Y = y_rel[pix_row]
    along, lateral = X * ex[pid] + Y * ey[pid], X * ey[pid] - Y * ex[pid]
    wm = wmax[pid]
    cand = (np.abs(lateral) <= wm) & (along >= -wm * caps[pid, 0]) & (along <= length[pid] + wm * caps[pid, 1])
    pid, row, col, along, lateral = pid[cand], row[cand], col[cand], along[cand], lateral[cand]
    g = np.minimum(np.maximum(along, 0.0), length[pid]) / length[pid] * (PROFILE_KNOTS - 1)
    i0 = np.minimum(g.astype(np.intp), PROFILE_KNOTS - 2)
    frac = (g - i0).astype(np.float32)
    a_t = profile[pid, i0] * (1 - frac) + profile[pid, i0 + 1] * frac  # _profile_at, one profile per pixel
    inside, t, e, across = _inside(along, lateral, length[pid], a_t, w_scale[pid], caps[pid, 0], caps[pid, 1])
    pid, row, col, t, e, across, a_t = pid[inside], row[inside], col[inside], t[inside], e[inside], across[inside], a_t[inside]
    kp = k[pid]
    ring, x, z = _visible_root(across, e, w_scale[pid], kp, c, s)
    depth = (z0[pid] + t * dz[pid] + a_t * ring * z).astype(np.float32)
    flat = row * W + col
    # z-test: the nearest candidate of each pixel wins (cloth does not enter the body buffer)
    cloth = np.array([p.cloth for p in prims])[pid]
    z_app = buf.z_app.reshape(-1).copy()
    np.maximum.at(z_app, flat, depth)
    win_app = depth >= z_app[flat]
    z_body = buf.z_body.reshape(-1).copy()
    np.maximum.at(z_body, flat[~cloth], depth[~cloth])
    win_body = ~cloth & (depth >= z_body[flat])
    keep = win_app | win_body
    pid, flat, depth, x, z, e, ring, t = pid[keep], flat[keep], depth[keep], x[keep], z[keep], e[keep], ring[keep], t[keep]
    win_app, win_body = win_app[keep], win_body[keep]
    kind = np.array([KINDS[p.kind] for p in prims])
    parts = np.array([p.parts for p in prims])
    part, v, shade = _surface(x, z, e, ring, k[pid], c, s, ex[pid], ey[pid], view, kind[pid], parts[pid, 0], parts[pid, 1])
    u_range = np.array([p.u_range for p in prims])
    u = (u_range[pid, 0] + (u_range[pid, 1] - u_range[pid, 0]) * t).astype(np.float32)
    _write(buf, flat, depth, part, u, v, shade, win_app, win_body, kind[pid] != KINDS["acc"])
