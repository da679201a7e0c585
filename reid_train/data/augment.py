"""Batch augmentation on any torch device, moving the body-part priors with the image.

The training transform of the strong re-ID baseline, applied to a whole batch
at once: resize to the training size, random horizontal flip (p = 0.5), pad
10 px with zeros and random-crop back (a random translation of up to ±10 px),
normalise with the ImageNet mean/std, then random erasing (Zhong et al.,
"Random erasing data augmentation", Alg. 1: p = 0.5, erased area
``S_e ~ U(s_l, s_h) * S`` with ``s_l = 0.02, s_h = 0.4``, aspect
``r_e ~ U(r_1, 1/r_1)`` with ``r_1 = 0.3``, ``H_e = sqrt(S_e r_e)``,
``W_e = sqrt(S_e / r_e)``, a random top-left point accepted when the rectangle
fits, up to 100 tries; pixels set to random values). DSA-reID (Sec. 4.2,
"Data augmentation": random cropping, horizontal flipping, random erasing with
p = 0.5) and MPN (Sec. 5.1: random erasing and flipping with ratio 0.5) train
with these.

Raw batch (what :class:`reid_train.data.StoreDataset` reads) -> model batch:

* ``images`` uint8 (B,H0,W0,3) RGB -> float32 (B,3,H,W) normalised;
* ``dsap`` uint8 (B,24,3,S,S) -> float32 normalised with the image mean/std,
  ``dsap_valid`` bool (B,24,S,S);
* ``mpn_mask`` uint8 (B,h,w) -> float32, ``mpn_roi`` (B,2) long,
  ``mpn_fallback`` bool; other keys pass through.

How the geometry moves the priors:

* **flip**: DSAP-images with :func:`priors.dsap.flip_dsap`'s convention
  (:data:`~priors.dsap.FLIP_PERMUTATION` swaps left/right parts,
  :data:`~priors.dsap.FLIP_MIRROR_V` mirrors the torso charts): ``flip_dsap``
  itself on CPU tensors, :func:`flip_dsap_torch` (the same tables, tested
  equal) on a GPU; the MPN mask is mirrored left-right; its ROI (rows) is
  unchanged.
* **pad-crop**: the image content moves by ``(dy, dx) = (pad - oy, pad - ox)``
  pixels (``(oy, ox)`` the crop corner in the padded image). The MPN mask,
  in feature-map cells of stride ``s = H / h``, moves by
  ``round(dy / s), round(dx / s)`` cells (half away from zero: with pad 10 and
  s = 16, shifts of 8..10 px move one cell, 0..7 px none), cells shifted in
  are 0. The ROI of a non-fallback image moves by the same rows and is
  clipped to ``[0, h-1]`` (this equals the first/last foreground rows of the
  shifted mask, MPN Sec. 3.2, unless foreground leaves the map). A fallback
  image keeps the whole-map ROI ``[0, h-1]`` and an all-ones fallback mask
  stays all ones. DSAP-images live in the body's UV space, so a translation
  does not move them.
* **random erasing** touches only the image (the priors come from the
  unoccluded image, as offline priors do).
* **resize** is applied to the image only; MPN masks are already in feature
  cells of the training size (checked by the loader).

Randomness: :func:`sample_params` draws every per-sample parameter on the CPU
from a ``torch.Generator``, so the same generator gives the same geometry on
any device; erasing values come from per-sample generators (on the images'
device) seeded from it, so a sample's values do not depend on its batch.

Two code paths, equal values (tested): CPU tensors go through numpy one sample
at a time (:func:`_images_numpy`; fast, no OpenMP team per call, so the
loader's threads scale), other devices through a single gather
(:func:`translate_flip`) and batched torch ops.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["AugmentConfig", "AugmentParams", "IMAGENET_MEAN", "IMAGENET_STD", "augment_batch",
           "sample_params", "flip_dsap_torch", "translate_flip", "feature_shift", "model_images", "resize_images"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ERASE_TRIES = 100  # Zhong et al., Alg. 1
FORCE_DEVICE_PATH = False  # tests: run the GPU code path (gather, torch ops) on CPU tensors


def _numpy_path(t: torch.Tensor) -> bool:
    """CPU tensors go through numpy (see :func:`_images_numpy`); other devices through torch."""
    return t.device.type == "cpu" and not FORCE_DEVICE_PATH


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation settings (defaults: strong baseline + Zhong et al.)."""

    flip_p: float = 0.5
    pad: int = 10
    erase_p: float = 0.5
    erase_sl: float = 0.02          # min erased area fraction s_l
    erase_sh: float = 0.4           # max erased area fraction s_h
    erase_r1: float = 0.3           # aspect ratio in [r1, 1/r1]
    erase_fill: str = "random"      # 'random': U(0,255) per value (Alg. 1); 'mean': mean colour (0 once normalised)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self):
        if self.erase_fill not in ("random", "mean"):
            raise ValueError(f"erase_fill must be 'random' or 'mean', got {self.erase_fill!r}")
        if self.pad < 0 or not (0 <= self.flip_p <= 1 and 0 <= self.erase_p <= 1):
            raise ValueError("need pad >= 0 and probabilities in [0, 1]")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    def off(self) -> "AugmentConfig":
        """The same normalisation, no random transform (evaluation)."""
        return replace(self, flip_p=0.0, pad=0, erase_p=0.0)


@dataclass
class AugmentParams:
    """Per-sample random parameters (CPU tensors).

    ``flip`` (B,) bool; ``shift`` (B,2) long content displacement (dy, dx) in
    pixels of the crop, in [-pad, pad]; ``erase`` (B,4) long rectangles
    (top, left, height, width) in the output image, height 0 = none;
    ``fill_seed`` (B,) long seeds of the erasing values.
    """

    flip: torch.Tensor
    shift: torch.Tensor
    erase: torch.Tensor
    fill_seed: torch.Tensor

    def __getitem__(self, sl) -> "AugmentParams":
        return AugmentParams(self.flip[sl], self.shift[sl], self.erase[sl], self.fill_seed[sl])

    @classmethod
    def identity(cls, B: int) -> "AugmentParams":
        """No flip, no shift, no erasing."""
        z = torch.zeros(B, dtype=torch.long)
        return cls(z.bool(), torch.zeros(B, 2, dtype=torch.long), torch.zeros(B, 4, dtype=torch.long), z)


def sample_params(B: int, size: tuple[int, int], cfg: AugmentConfig,
                  generator: torch.Generator | None) -> AugmentParams:
    """Draw flip, crop and erasing parameters for B samples of size (H, W)."""
    if cfg.flip_p == 0 and cfg.pad == 0 and cfg.erase_p == 0:
        return AugmentParams.identity(B)   # and leave the RNG alone
    H, W = size
    g = generator
    flip = torch.rand(B, generator=g) < cfg.flip_p
    shift = cfg.pad - torch.randint(0, 2 * cfg.pad + 1, (B, 2), generator=g)
    # Zhong et al. Alg. 1, all tries at once; the first fitting try wins
    do = torch.rand(B, generator=g) < cfg.erase_p
    u = torch.rand(B, ERASE_TRIES, generator=g, dtype=torch.float64)
    area = (cfg.erase_sl + (cfg.erase_sh - cfg.erase_sl) * u) * (H * W)
    r = cfg.erase_r1 + (1 / cfg.erase_r1 - cfg.erase_r1) * torch.rand(B, ERASE_TRIES, generator=g, dtype=torch.float64)
    he = torch.sqrt(area * r).round().long()
    we = torch.sqrt(area / r).round().long()
    ye = torch.randint(0, H, (B, ERASE_TRIES), generator=g)
    xe = torch.randint(0, W, (B, ERASE_TRIES), generator=g)
    fits = (ye + he <= H) & (xe + we <= W) & (he > 0) & (we > 0)
    first = torch.argmax(fits.int(), dim=1)
    pick = lambda t: t.gather(1, first[:, None])[:, 0]  # noqa: E731
    ok = do & fits.any(dim=1)
    erase = torch.stack([pick(ye), pick(xe), pick(he), pick(we)], dim=1) * ok[:, None]
    fill_seed = torch.randint(0, 2**62, (B,), generator=g)
    return AugmentParams(flip, shift, erase, fill_seed)


def translate_flip(x: torch.Tensor, flip: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``out[b, y, x] = flipped_b[y - dy_b, x - dx_b]`` (0 outside), one gather.

    ``x`` (B,H,W,...) any dtype; ``flip`` (B,) bool mirrors columns first;
    ``shift`` (B,2) (dy, dx) moves the content down/right. Vectorised over the
    batch: a single ``index_select`` over a flattened, zero-bordered copy.
    """
    B, H, W = x.shape[:3]
    dev = x.device
    flip, shift = flip.to(dev), shift.to(dev)
    rows = torch.arange(H, device=dev)[None] - shift[:, :1]          # (B,H) source rows
    cols = torch.arange(W, device=dev)[None] - shift[:, 1:]          # (B,W) columns of the flipped image
    rows = torch.where((rows >= 0) & (rows < H), rows, H)            # H, W: the zero border
    cols_src = torch.where(flip[:, None], W - 1 - cols, cols)
    cols = torch.where((cols >= 0) & (cols < W), cols_src, W)
    tail = x.shape[3:]
    xp = F.pad(x.reshape(B, H, W, -1), (0, 0, 0, 1, 0, 1))           # (B,H+1,W+1,C)
    base = torch.arange(B, device=dev)[:, None, None] * ((H + 1) * (W + 1))
    pix = (base + rows[:, :, None] * (W + 1) + cols[:, None, :]).reshape(-1)
    out = xp.reshape(B * (H + 1) * (W + 1), -1).index_select(0, pix)
    return out.reshape(B, H, W, *tail)


def feature_shift(shift: torch.Tensor, stride: tuple[float, float]) -> torch.Tensor:
    """Pixel shift -> feature-cell shift, rounded half away from zero."""
    s = torch.tensor(stride, dtype=torch.float64)
    q = shift.double() / s
    return (torch.sign(q) * torch.floor(q.abs() + 0.5)).long()


def flip_dsap_torch(dsap: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`priors.dsap.flip_dsap` for torch tensors (..., 24, 3, S, S) / (..., 24, S, S)."""
    from priors.dsap import FLIP_MIRROR_V, FLIP_PERMUTATION

    perm = torch.tensor(FLIP_PERMUTATION, device=dsap.device)
    mirror = torch.tensor(FLIP_MIRROR_V, device=dsap.device)
    d = dsap.index_select(-4, perm)
    v = valid.index_select(-3, perm)
    d = torch.where(mirror[:, None, None, None], d.flip(-1), d)
    v = torch.where(mirror[:, None, None], v.flip(-1), v)
    return d, v


def _affine(cfg: AugmentConfig, shape: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """float32 ``scale, offset`` with ``x * scale + offset == (x/255 - mean) / std`` for x in 0..255."""
    scale = np.array([1 / (255 * s) for s in cfg.std], np.float32).reshape(shape)
    offset = np.array([-m / s for m, s in zip(cfg.mean, cfg.std)], np.float32).reshape(shape)
    return scale, offset


def _normalise(x_u8: torch.Tensor, channel_dim: int, cfg: AugmentConfig) -> torch.Tensor:
    """uint8 -> float32 ``(x/255 - mean) / std`` along ``channel_dim``."""
    shape = [1] * x_u8.dim()
    shape[channel_dim] = 3
    scale, offset = _affine(cfg, shape)
    if _numpy_path(x_u8):  # numpy: no OpenMP team per call in the loader threads
        out = np.multiply(x_u8.numpy(), scale, dtype=np.float32)
        out += offset
        return torch.from_numpy(out)
    out = x_u8.float()
    return out.mul_(torch.from_numpy(scale).to(out.device)).add_(torch.from_numpy(offset).to(out.device))


def resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (B,H0,W0,3) -> uint8 (B,H,W,3), bilinear with antialiasing (as PIL)."""
    if tuple(images.shape[1:3]) == tuple(size):
        return images
    x = images.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _erase_one(region: torch.Tensor, seed: int, cfg: AugmentConfig) -> None:
    """Fill one (3,h,w) region *before* normalising (pixel scale 0..255):
    ``U(0, 255)`` per value (Zhong et al.), or the mean colour."""
    if cfg.erase_fill == "mean":
        region.copy_(torch.tensor([255 * m for m in cfg.mean], device=region.device).view(3, 1, 1).expand_as(region))
    else:
        region.uniform_(0.0, 255.0, generator=torch.Generator(device=region.device).manual_seed(seed))


def _images_numpy(out: torch.Tensor, images: np.ndarray, params: AugmentParams, cfg: AugmentConfig) -> None:
    """CPU path of :func:`model_images`, one sample at a time into float32 ``out``.

    Per sample: a numpy slice copy (the flip is a negative-stride view;
    conversion and HWC -> CHW in the same pass), erasing, then the affine
    normalisation while the sample is still in cache. On the CPU this is
    several times faster than :func:`translate_flip`'s gather and gives the
    same values (tested); numpy releases the GIL without starting an OpenMP
    team, so loader threads scale.
    """
    _, _, H, W = out.shape
    o = out.numpy()
    scale, offset = _affine(cfg, [3, 1, 1])
    rects, seeds = params.erase.tolist(), params.fill_seed.tolist()
    for b, (flip, (dy, dx)) in enumerate(zip(params.flip.tolist(), params.shift.tolist())):
        src = images[b, :, ::-1] if flip else images[b]
        ys, yd, h = max(0, -dy), max(0, dy), H - abs(dy)
        xs, xd, w = max(0, -dx), max(0, dx), W - abs(dx)
        dst = o[b]
        np.copyto(dst[:, yd:yd + h, xd:xd + w], src[ys:ys + h, xs:xs + w].transpose(2, 0, 1), casting="unsafe")
        if dy:
            dst[:, :yd] = 0
            dst[:, yd + h:] = 0
        if dx:
            dst[:, :, :xd] = 0
            dst[:, :, xd + w:] = 0
        ey, ex, eh, ew = rects[b]
        if eh:
            _erase_one(out[b, :, ey:ey + eh, ex:ex + ew], seeds[b], cfg)
        dst *= scale
        dst += offset


def model_images(images: torch.Tensor, params: AugmentParams, cfg: AugmentConfig) -> torch.Tensor:
    """uint8 (B,H,W,3) -> flipped, translated, erased, normalised float (B,3,H,W)."""
    B, H, W, _ = images.shape
    out = torch.empty((B, 3, H, W), dtype=torch.float32, device=images.device)
    if _numpy_path(images):
        _images_numpy(out, images.numpy(), params, cfg)
        return out
    moved = bool(params.flip.any()) or bool(params.shift.any())   # one gather kernel, not 2B small ones
    out.copy_((translate_flip(images, params.flip, params.shift) if moved else images).permute(0, 3, 1, 2))
    for b, ((y, x, h, w), seed) in enumerate(zip(params.erase.tolist(), params.fill_seed.tolist())):
        if h:
            _erase_one(out[b, :, y:y + h, x:x + w], seed, cfg)
    scale, offset = (torch.from_numpy(a).to(out.device) for a in _affine(cfg, [3, 1, 1]))
    return out.mul_(scale).add_(offset)


def _flip_dsap(dsap: torch.Tensor, valid: torch.Tensor, flip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip the DSAP-images of the samples with ``flip`` set."""
    if not bool(flip.any()):
        return dsap, valid
    if _numpy_path(dsap):  # priors.dsap.flip_dsap itself, on the flipped samples
        from priors.dsap import flip_dsap

        idx = np.flatnonzero(flip.numpy())
        d, v = dsap.numpy().copy(), valid.numpy().copy()
        d[idx], v[idx] = flip_dsap(d[idx], v[idx])
        return torch.from_numpy(d), torch.from_numpy(v)
    fl = flip.to(dsap.device)
    fd, fv = flip_dsap_torch(dsap, valid)
    return torch.where(fl[:, None, None, None, None], fd, dsap), torch.where(fl[:, None, None, None], fv, valid)


def augment_batch(batch: dict, cfg: AugmentConfig, generator: torch.Generator | None = None,
                  size: tuple[int, int] | None = None, params: AugmentParams | None = None) -> dict:
    """Raw batch -> augmented model batch (see the module docstring).

    ``size`` (H, W): training size (default: the images' size). ``params``:
    pre-drawn parameters (default: :func:`sample_params` with ``generator``).
    Pass ``cfg.off()`` for evaluation batches (resize + normalise only).
    """
    out = dict(batch)
    images = batch["images"]
    B = images.shape[0]
    size = tuple(size) if size is not None else tuple(images.shape[1:3])
    if params is None:
        params = sample_params(B, size, cfg, generator)
    out["images"] = model_images(resize_images(images, size), params, cfg)
    moved = bool(params.flip.any()) or bool(params.shift.any())

    if "dsap" in batch:
        dsap, valid = _flip_dsap(batch["dsap"], batch["dsap_valid"].bool(), params.flip)
        out["dsap"] = _normalise(dsap, 2, cfg)
        out["dsap_valid"] = valid
    if "mpn_mask" in batch:
        mask = batch["mpn_mask"]
        roi = batch["mpn_roi"].long()
        fallback = batch["mpn_fallback"].bool()
        h, w = mask.shape[1:]
        if moved:
            cells = feature_shift(params.shift, (size[0] / h, size[1] / w)).to(mask.device)
            keep = fallback & (mask != 0).flatten(1).all(dim=1)        # all-ones fallback masks stay
            cells = torch.where(keep[:, None], 0, cells)
            mask = translate_flip(mask, params.flip.to(mask.device) & ~keep, cells)
            roi = torch.where(fallback[:, None], roi, (roi + cells[:, :1]).clamp(0, h - 1))
        out["mpn_mask"] = mask.float()
        out["mpn_roi"] = roi
        out["mpn_fallback"] = fallback
    return out

