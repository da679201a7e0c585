"""Storage encoding of DensePose IUV maps, exact for the DSAP warp (DSA-reID Sec. 3.1).

The warp of Sec. 3.1 only ever uses ``u`` and ``v`` through the cell indices
``floor(u * S)`` and ``floor(v * S)`` (``S = 32`` in the paper). The store keeps

* ``i``  — part index 0..24 (0 = background) as ``uint8``;
* ``uv`` — ``U`` and ``V`` stacked on the axis before (H, W), as ``uint16`` with
  ``q = min(floor(u * 65536), 65535)`` (:func:`encode_uv`).

Why this loses nothing the warp needs
-------------------------------------
For a power-of-two ``S = 2**k <= 65536`` the cell can be computed from ``q``
alone, in integers, and equals the cell of the unquantised value:

    (q * S) >> 16  ==  floor(floor(u * 65536) / 2**(16 - k))  ==  floor(u * S)

(nested floors by an integer divisor collapse: ``floor(floor(x) / n) ==
floor(x / n)``; and ``u * 65536`` is exact in binary floating point, so
``floor(u * 65536)`` has no rounding error). At ``u = 1`` the code is 65535 and
``(65535 * S) >> 16 == S - 1``: the paper's ``u = 1`` lands in the last cell, the
same clamp :func:`uv_cell` applies to floats. ``q * S < 2**32``, so ``uint32``
arithmetic suffices.

For a ``S`` that is not a power of two the integer formula still gives
``floor(decode_uv(q) * S)`` exactly, which may be one cell lower than
``floor(u * S)`` when ``u`` lies within ``2**-16`` above a cell boundary.

:func:`decode_uv` returns the lower edge ``q / 65536`` of the quantisation bin
(exact in float32), so ``decode_uv(encode_uv(u)) <= u < decode_uv(encode_uv(u)) + 2**-16``
for ``u`` in [0, 1).
"""
from __future__ import annotations

import numpy as np

N_PARTS = 24
UV_LEVELS = 65536  # 2**16 quantisation levels for U and V
UV_MAX_CODE = UV_LEVELS - 1


def encode_uv(u: np.ndarray) -> np.ndarray:
    """Quantise chart coordinates in [0, 1] to ``uint16``: ``min(floor(u * 65536), 65535)``.

    Values are clipped to [0, 1] first (DensePose's regression head can overshoot
    slightly); NaN encodes as 0.
    """
    u = np.nan_to_num(np.asarray(u, dtype=np.float64), nan=0.0)
    q = np.floor(np.clip(u, 0.0, 1.0) * UV_LEVELS)
    return np.minimum(q, UV_MAX_CODE).astype(np.uint16)


def decode_uv(uv16: np.ndarray) -> np.ndarray:
    """``uint16`` codes back to float32 ``q / 65536`` (the lower edge of the bin, exact)."""
    uv16 = np.asarray(uv16)
    if uv16.dtype != np.uint16:
        raise TypeError(f"decode_uv expects uint16 codes, got {uv16.dtype}")
    return uv16.astype(np.float32) * np.float32(1.0 / UV_LEVELS)


def uv_cell(uv: np.ndarray, S: int) -> np.ndarray:
    """Cell index ``floor(u * S)`` clamped to ``0..S-1`` (Sec. 3.1), as ``intp``.

    ``uv`` is either float in [0, 1] (values outside are clipped, NaN counts as 0)
    or ``uint16`` codes from :func:`encode_uv`, for which the cell is computed
    exactly in integers: ``(q * S) >> 16`` (see the module docstring).
    """
    if not 1 <= S <= UV_LEVELS:
        raise ValueError(f"S must lie in 1..{UV_LEVELS}, got {S}")
    uv = np.asarray(uv)
    if uv.dtype == np.uint16:
        return ((uv.astype(np.uint32) * np.uint32(S)) >> np.uint32(16)).astype(np.intp)
    if not np.issubdtype(uv.dtype, np.floating):
        raise TypeError(f"u/v must be float in [0, 1] or uint16 codes, got {uv.dtype}")
    # u * S is exact in float32 for power-of-two S, and in float64 for float32 u and any S < 2**29
    if not (uv.dtype == np.float32 and S & (S - 1) == 0):
        uv = uv.astype(np.float64)
    x = np.fmin(np.fmax(uv, 0), 1)  # clip to [0, 1]; fmax maps NaN to 0
    cell = (x * S).astype(np.intp)  # truncation == floor for x >= 0
    return np.minimum(cell, S - 1)


def pack_iuv(i: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Store form of an IUV map: ``(i uint8 (..., H, W), uv uint16 (..., 2, H, W))``.

    ``i`` must hold integers in 0..24. ``u``/``v`` are floats in [0, 1].
    """
    i = np.asarray(i)
    if not (i.shape == np.shape(u) == np.shape(v)):
        raise ValueError(f"i/u/v shapes differ: {i.shape}, {np.shape(u)}, {np.shape(v)}")
    if i.size and (i.min() < 0 or i.max() > N_PARTS):
        raise ValueError(f"part indices must lie in 0..{N_PARTS}")
    uv = np.stack([encode_uv(u), encode_uv(v)], axis=-3)
    return i.astype(np.uint8), uv


def unpack_iuv(i: np.ndarray, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_iuv`: ``(i uint8, u float32, v float32)`` with u/v on the bin's lower edge."""
    uv = np.asarray(uv)
    if uv.ndim < 3 or uv.shape[-3] != 2:
        raise ValueError(f"uv must have a U/V axis of length 2 before (H, W), got shape {uv.shape}")
    return np.asarray(i, dtype=np.uint8), decode_uv(uv[..., 0, :, :]), decode_uv(uv[..., 1, :, :])


__all__ = [
    "N_PARTS",
    "UV_LEVELS",
    "UV_MAX_CODE",
    "encode_uv",
    "decode_uv",
    "uv_cell",
    "pack_iuv",
    "unpack_iuv",
]
