"""Robust image decoding for ingest: every file becomes an 8-bit RGB array or a ``BadImage`` with a reason.

``read_and_check(path)`` never lets a bad file crash ingest and never throws away a good one:

* **Fast path.** Baseline/progressive JPEGs in YCbCr, RGB or grayscale are decoded by ``simplejpeg``
  (libjpeg-turbo) in strict mode, so libjpeg's *warnings* are errors: a truncated JPEG
  ("Premature end of JPEG file") is reported as ``truncated`` instead of being decoded with a grey bottom,
  and any other libjpeg warning (a marker in the middle of the entropy data, ...) as ``corrupt``.
  Pass ``strict_jpeg=False`` to keep such images (``DecodedImage.warning`` then holds the libjpeg message;
  truncation is still refused).
* **Everything else** (PNG, BMP, GIF, TIFF, WebP, CMYK/YCCK JPEGs, JPEGs whose header libjpeg refuses)
  goes through Pillow with ``ImageFile.LOAD_TRUNCATED_IMAGES`` left at its default ``False``, which makes
  Pillow raise "image file is truncated". CMYK/YCCK JPEGs are first validated by a strict simplejpeg
  decode (so truncation is caught the same way), then converted by Pillow, which knows about the Adobe
  inverted-CMYK marker.
* **PNG chunk CRCs are checked** (Pillow checks them for ancillary chunks but not for ``IDAT``): a CRC
  mismatch in any chunk is ``corrupt``. JPEG has no checksum: libjpeg's strict mode catches garbled entropy
  data that desynchronises the Huffman decoder (most of it, see ``tests/test_decode.py``); a garble that
  happens to stay a valid Huffman stream cannot be told from a real image.
* **Files are never read whole before their size is known**: ``read_and_check`` stats the path first;
  anything that is not a regular file (a directory, FIFO, device) is ``not_a_file`` and never opened,
  and a file over ``max_bytes`` (default 16 MiB, ~100x a large re-ID crop) is ``too_large``.
* **Details never hold file contents** (only sizes, signatures' names and decoder messages).
* **Sizes are checked from the header, before any pixel is decoded**: ``absurd_size`` when
  ``min(H, W) < min_side`` (default 8) or ``max(H, W) > max_side`` (default 8192) or
  ``max(H, W) / min(H, W) > max_aspect`` (default 10, i.e. H/W outside [0.1, 10]).

Conversions that keep the image (status ok; ``DecodedImage.converted`` names them, '' when none):

==================  ======================  ==============================================================
source              ``converted``           rule
==================  ======================  ==============================================================
L (gray)            ``L->RGB``              replicate the channel: gray 100 -> (100, 100, 100)
1 (bilevel)         ``1->RGB``              0 -> 0, 1 -> 255, then as L
LA / RGBA / PA      ``RGBA->RGB`` etc.      composite on black: round(c * a / 255). Transparent pixels
                                            have undefined colour, so dropping alpha would keep garbage;
                                            on black, the result depends only on what is visible.
RGBa / La           ``RGBa->RGB``           already premultiplied (= composited on black): drop alpha
RGBX                ``RGBX->RGB``           drop the padding channel
P (palette)         ``P->RGB``              palette lookup (``P->RGBA->RGB`` when it has transparency)
CMYK / YCCK JPEG    ``CMYK->RGB``           Pillow's conversion (no ICC colour management)
YCbCr (non-JPEG)    ``YCbCr->RGB``          Pillow's conversion
I;16 / I;16B / I    ``I;16->RGB``           16-bit gray -> 8 bit as ``v >> 8`` (= floor(v / 256)):
                                            65535 -> 255, 0 -> 0; then as L. 'I' (32-bit int) only when
                                            all values lie in [0, 65535], else ``unsupported_mode``
16-bit RGB(A) PNG   ``RGB;16->RGB``         Pillow unpacks 16-bit colour PNGs by the high byte, the same
                                            ``v >> 8`` rule; the bit depth is read from the PNG header
F, LAB, HSV, ...    --                      ``unsupported_mode``
==================  ======================  ==============================================================

Multi-frame files (GIF, TIFF) give their first frame, with a ``warning``. EXIF orientation is not applied
(re-ID crops are stored upright; Pillow does not apply it either).

Reason codes of ``BadImage`` (``REASONS``): ``missing_file``, ``unreadable`` (I/O error, a directory),
``empty_file``, ``not_an_image`` (no image signature Pillow knows), ``corrupt`` (an image signature, but
the data do not decode or a PNG CRC fails), ``truncated``, ``absurd_size``, ``unsupported_mode``,
``not_a_file`` (directory, FIFO, device), ``too_large`` (over ``max_bytes``).

``resize_rgb`` uses ``cv2.INTER_AREA`` when neither side grows (area averaging, no aliasing) and
``cv2.INTER_LINEAR`` as soon as one side grows (INTER_AREA degenerates to blocky output on upsampling).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import zlib
from dataclasses import dataclass
from os import PathLike

import cv2
import numpy as np
import simplejpeg
from PIL import Image, ImageFile, UnidentifiedImageError

__all__ = [
    "REASONS",
    "BadImage",
    "DecodedImage",
    "check_size",
    "decode_bytes",
    "read_and_check",
    "resize_rgb",
    "sha256_file",
]

REASONS = (
    "missing_file",
    "unreadable",
    "empty_file",
    "not_an_image",
    "corrupt",
    "truncated",
    "absurd_size",
    "unsupported_mode",
    "not_a_file",
    "too_large",
)
DEFAULT_MAX_BYTES = 16 << 20

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# signatures of formats Pillow reads: a file that starts with one but does not open is corrupt, not "not an image"
_IMAGE_MAGICS = (_JPEG_MAGIC, _PNG_MAGIC, b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*", b"RIFF")
_LIBJPEG_TRUNCATED = "Premature end of JPEG file"
_SIXTEEN_BIT_GRAY = ("I;16", "I;16L", "I;16B", "I;16N")


class BadImage(Exception):
    """A file that cannot become an image. ``reason`` is one of ``REASONS``; ``detail`` is free text."""

    def __init__(self, reason: str, detail: str = ""):
        if reason not in REASONS:
            raise ValueError(f"unknown BadImage reason {reason!r}; expected one of {REASONS}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image: ``rgb`` is (H, W, 3) uint8, C-contiguous, at the original size."""

    rgb: np.ndarray
    orig_height: int
    orig_width: int
    sha256: str
    mode: str  # source pixel mode, Pillow's names ('RGB', 'L', 'CMYK', 'I;16', 'RGB;16', ...)
    converted: str = ""  # what was converted, e.g. 'L->RGB'; '' when the source already was 8-bit RGB
    warning: str = ""  # a tolerated oddity (first frame of many, libjpeg warning with strict_jpeg=False)


def sha256_file(path: str | PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def check_size(height: int, width: int, *, min_side: int = 8, max_side: int = 8192, max_aspect: float = 10.0) -> None:
    """Raise ``BadImage('absurd_size')`` unless min_side <= H, W <= max_side and max(H,W)/min(H,W) <= max_aspect."""
    short, long = min(height, width), max(height, width)
    if short < min_side:
        raise BadImage("absurd_size", f"{height}x{width} (HxW): shorter side {short} < {min_side}")
    if long > max_side:
        raise BadImage("absurd_size", f"{height}x{width} (HxW): longer side {long} > {max_side}")
    if long > max_aspect * short:
        raise BadImage("absurd_size", f"{height}x{width} (HxW): aspect ratio {long / short:.3g} > {max_aspect}")


def read_and_check(
    path: str | PathLike,
    *,
    min_side: int = 8,
    max_side: int = 8192,
    max_aspect: float = 10.0,
    strict_jpeg: bool = True,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> DecodedImage:
    """Read ``path`` and decode it to 8-bit RGB, or raise ``BadImage`` (see the module docstring)."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (FIFO, device or socket)"
            raise BadImage("not_a_file", kind)
        if st.st_size > max_bytes:
            raise BadImage("too_large", f"{st.st_size} bytes > {max_bytes} (max_bytes)")
        with open(path, "rb") as f:
            data = f.read(min(st.st_size, max_bytes) + 1)
    except FileNotFoundError as e:
        raise BadImage("missing_file", f"{type(e).__name__}: {e.strerror}") from None
    except OSError as e:  # PermissionError, EIO, ELOOP, ENAMETOOLONG, ...
        raise BadImage("unreadable", f"{type(e).__name__}: {e.strerror}") from None
    if len(data) > st.st_size:
        raise BadImage("unreadable", f"the file grew while it was read (stat said {st.st_size} bytes)")
    return decode_bytes(data, min_side=min_side, max_side=max_side, max_aspect=max_aspect, strict_jpeg=strict_jpeg)


def check_png_crcs(data: bytes) -> None:
    """Walk the PNG chunks up to IEND; a CRC mismatch is ``corrupt``, a cut chunk ``truncated``."""
    pos = len(_PNG_MAGIC)
    while True:
        if pos + 12 > len(data):
            raise BadImage("truncated", f"PNG ends inside the chunk at byte {pos} (no IEND)")
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        end = pos + 12 + length
        if end > len(data):
            raise BadImage("truncated", f"PNG chunk {kind.decode('latin-1')!r} at byte {pos} is cut")
        if zlib.crc32(data[pos + 4:pos + 8 + length]) != int.from_bytes(data[end - 4:end], "big"):
            raise BadImage("corrupt", f"PNG chunk {kind.decode('latin-1')!r} at byte {pos}: CRC mismatch")
        if kind == b"IEND":
            return
        pos = end


def decode_bytes(
    data: bytes,
    *,
    min_side: int = 8,
    max_side: int = 8192,
    max_aspect: float = 10.0,
    strict_jpeg: bool = True,
) -> DecodedImage:
    """``read_and_check`` on bytes already in memory (the sha256 is that of ``data``)."""
    if len(data) == 0:
        raise BadImage("empty_file", "0 bytes")
    bounds = dict(min_side=min_side, max_side=max_side, max_aspect=max_aspect)
    sha = hashlib.sha256(data).hexdigest()
    if data.startswith(_PNG_MAGIC):
        check_png_crcs(data)
    if data.startswith(_JPEG_MAGIC):
        try:
            height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError:
            pass  # header libjpeg cannot read: let Pillow open it and say why
        else:
            check_size(height, width, **bounds)
            if colorspace in ("YCbCr", "RGB", "Gray"):
                rgb, warning = _simplejpeg_decode(data, "RGB", strict_jpeg)
                gray = colorspace == "Gray"
                return DecodedImage(rgb, height, width, sha, "L" if gray else "RGB", "L->RGB" if gray else "", warning)
            _simplejpeg_decode(data, "CMYK", strict_jpeg)  # CMYK / YCCK: validate, then convert with Pillow
    return _pillow_decode(data, sha, bounds)


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (H, W, 3) uint8 to ``size`` = (H, W): INTER_AREA when no side grows, else INTER_LINEAR."""
    out_h, out_w = int(size[0]), int(size[1])
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"resize_rgb expects (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    in_h, in_w = rgb.shape[:2]
    if (in_h, in_w) == (out_h, out_w):
        return np.ascontiguousarray(rgb)
    interpolation = cv2.INTER_AREA if out_h <= in_h and out_w <= in_w else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(rgb), (out_w, out_h), interpolation=interpolation)


# ----------------------------------------------------------------------------------------------------------


def _simplejpeg_decode(data: bytes, colorspace: str, strict: bool) -> tuple[np.ndarray, str]:
    """Strict libjpeg-turbo decode; truncation is always refused, other warnings only when ``strict``."""
    try:
        return simplejpeg.decode_jpeg(data, colorspace=colorspace, strict=True), ""
    except ValueError as e:
        message = str(e)
        if _LIBJPEG_TRUNCATED in message:
            raise BadImage("truncated", f"libjpeg: {message}") from None
        if strict:
            raise BadImage("corrupt", f"libjpeg: {message}") from None
        try:
            return simplejpeg.decode_jpeg(data, colorspace=colorspace, strict=False), f"libjpeg: {message}"
        except ValueError as e2:
            raise BadImage("corrupt", f"libjpeg: {e2}") from None


def _pillow_decode(data: bytes, sha: str, bounds: dict) -> DecodedImage:
    """Open with Pillow, check the header size, load (truncation raises), convert to 8-bit RGB."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # someone switched Pillow to silently grey-fill truncated files
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True: truncated images would pass as ok")
    try:
        im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise BadImage("absurd_size", str(e)) from None
    except UnidentifiedImageError:
        if data.startswith(_IMAGE_MAGICS):
            raise BadImage("corrupt", f"{_signature_name(data)} signature but Pillow cannot read the header") from None
        raise BadImage("not_an_image", f"no image signature Pillow knows ({len(data)} bytes)") from None
    except Exception as e:  # noqa: BLE001 - plugins raise anything on damaged headers
        raise _classify_pillow_error(e) from None
    width, height = im.size
    check_size(height, width, **bounds)
    try:
        im.load()
    except Exception as e:  # noqa: BLE001
        raise _classify_pillow_error(e) from None
    warning = ""
    n_frames = getattr(im, "n_frames", 1)
    if n_frames > 1:
        warning = f"{n_frames} frames: first frame used"
    mode = im.mode
    if mode in ("RGB", "RGBA") and data.startswith(_PNG_MAGIC) and len(data) > 24 and data[24] == 16:
        mode = f"{mode};16"  # IHDR bit depth; Pillow has already kept the high byte of each sample
    rgb, converted = _to_rgb8(im, mode)
    return DecodedImage(np.ascontiguousarray(rgb), height, width, sha, mode, converted, warning)


def _signature_name(data: bytes) -> str:
    names = {_JPEG_MAGIC: "JPEG", _PNG_MAGIC: "PNG", b"GIF87a": "GIF", b"GIF89a": "GIF", b"BM": "BMP",
             b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"RIFF": "RIFF/WebP"}
    return next((v for k, v in names.items() if data.startswith(k)), "image")


def _classify_pillow_error(e: Exception) -> BadImage:
    message = f"{type(e).__name__}: {e}"
    if "truncated" in message.lower():
        return BadImage("truncated", message)
    return BadImage("corrupt", message)


def _composite_on_black(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """round(color * alpha / 255) in integers: (x + 127) // 255 rounds x / 255 (255 is odd: no ties)."""
    weighted = color.astype(np.uint16) * alpha.astype(np.uint16)[..., None]
    return ((weighted + 127) // 255).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


def _to_rgb8(im: Image.Image, mode: str) -> tuple[np.ndarray, str]:
    """Convert a loaded Pillow image to (H, W, 3) uint8; ``mode`` may carry ';16' for 16-bit colour PNGs."""
    pil_mode = im.mode
    if pil_mode == "RGB":
        return np.asarray(im), ("RGB;16->RGB" if mode == "RGB;16" else "")
    if pil_mode == "L":
        return _gray_to_rgb(np.asarray(im)), "L->RGB"
    if pil_mode == "1":
        return _gray_to_rgb(np.asarray(im.convert("L"))), "1->RGB"
    if pil_mode in _SIXTEEN_BIT_GRAY or pil_mode == "I":
        values = np.asarray(im)
        if pil_mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
            raise BadImage("unsupported_mode", f"32-bit integer image with values in [{values.min()}, {values.max()}]")
        return _gray_to_rgb((values.astype(np.uint32) >> 8).astype(np.uint8)), f"{pil_mode}->RGB"
    if pil_mode in ("RGBA", "LA"):
        array = np.asarray(im)
        color = array[..., :3] if pil_mode == "RGBA" else _gray_to_rgb(array[..., 0])
        return _composite_on_black(color, array[..., -1]), f"{mode}->RGB"
    if pil_mode in ("RGBa", "La"):
        array = np.asarray(im)
        return (array[..., :3] if pil_mode == "RGBa" else _gray_to_rgb(array[..., 0])), f"{pil_mode}->RGB"
    if pil_mode == "RGBX":
        return np.asarray(im)[..., :3], "RGBX->RGB"
    if pil_mode in ("P", "PA"):
        if pil_mode == "PA" or "transparency" in im.info:
            rgba = np.asarray(im.convert("RGBA"))
            return _composite_on_black(rgba[..., :3], rgba[..., 3]), f"{pil_mode}->RGBA->RGB"
        return np.asarray(im.convert("RGB")), "P->RGB"
    if pil_mode in ("CMYK", "YCbCr"):
        return np.asarray(im.convert("RGB")), f"{pil_mode}->RGB"
    raise BadImage("unsupported_mode", f"Pillow mode {pil_mode!r}")
