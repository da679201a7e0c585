"""storage/decode.py on a bad-input corpus generated here: every file is an RGB array or a BadImage reason."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import cv2
import numpy as np
import pytest
import simplejpeg
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from storage.decode import REASONS, BadImage, DecodedImage, decode_bytes, read_and_check, resize_rgb, sha256_file

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _rng_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _smooth_rgb(h: int = 128, w: int = 64) -> np.ndarray:
    """A smooth image, so JPEG round trips stay close to the source."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([yy * 255 // (h - 1), xx * 255 // (w - 1), np.full_like(yy, 90)], axis=2).astype(np.uint8)


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _reason(path) -> str:
    with pytest.raises(BadImage) as info:
        read_and_check(path)
    assert info.value.reason in REASONS
    return info.value.reason


# ------------------------------------------------------------------------------------------- bad files


def test_empty_missing_directory_and_random_bytes(tmp_path):
    assert _reason(_write(tmp_path, "empty.jpg", b"")) == "empty_file"
    assert _reason(tmp_path / "does_not_exist.jpg") == "missing_file"
    (tmp_path / "folder.jpg").mkdir()
    assert _reason(tmp_path / "folder.jpg") == "not_a_file"
    noise = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    assert _reason(_write(tmp_path, "noise.jpg", b"\x00" + noise)) == "not_an_image"
    assert _reason(_write(tmp_path, "text.png", b"hello, world\n" * 20)) == "not_an_image"


def test_truncated_jpeg_is_refused_not_grey_filled(tmp_path):
    data = _encode(Image.fromarray(_rng_rgb(128, 64)), "JPEG", quality=90)
    for cut in (len(data) // 2, len(data) - 2, 300):  # half, only the EOI marker lost, inside the header
        assert _reason(_write(tmp_path, f"cut{cut}.jpg", data[:cut])) == "truncated", cut
    progressive = _encode(Image.fromarray(_rng_rgb(128, 64)), "JPEG", quality=90, progressive=True)
    assert _reason(_write(tmp_path, "prog.jpg", progressive[: len(progressive) // 2])) == "truncated"
    # the same bytes, read permissively, would have decoded: the check is what refuses them
    assert simplejpeg.decode_jpeg(data[: len(data) // 2], strict=False).shape == (128, 64, 3)
    # and strict_jpeg=False still refuses truncation
    with pytest.raises(BadImage, match="truncated"):
        read_and_check(tmp_path / f"cut{len(data) // 2}.jpg", strict_jpeg=False)


def test_jpeg_with_damaged_entropy_data_is_corrupt_unless_tolerated(tmp_path):
    data = _encode(Image.fromarray(_rng_rgb(128, 64)), "JPEG", quality=90)
    middle = len(data) // 2
    damaged = data[:middle] + b"\xff\xd0" + data[middle + 2 :]  # a restart marker where none belongs
    path = _write(tmp_path, "damaged.jpg", damaged)
    assert _reason(path) == "corrupt"
    tolerated = read_and_check(path, strict_jpeg=False)
    assert tolerated.rgb.shape == (128, 64, 3) and tolerated.warning.startswith("libjpeg:")


def test_truncated_and_corrupt_png_and_other_formats(tmp_path):
    image = Image.fromarray(_rng_rgb(128, 64))
    png = _encode(image, "PNG")
    assert _reason(_write(tmp_path, "half.png", png[: len(png) // 2])) == "truncated"
    flipped = bytearray(png)
    flipped[len(png) // 2] ^= 0xFF  # inside IDAT: zlib stream broken
    assert _reason(_write(tmp_path, "flip.png", bytes(flipped))) == "corrupt"
    assert _reason(_write(tmp_path, "header.png", png[:40])) == "truncated"  # PNG signature, header cut (CRC walk)
    for fmt in ("BMP", "GIF", "TIFF"):
        data = _encode(image, fmt)
        assert _reason(_write(tmp_path, f"half.{fmt.lower()}", data[: len(data) // 2])) == "truncated", fmt


def test_absurd_sizes_checked_from_the_header(tmp_path):
    def png(h, w):
        return _encode(Image.new("RGB", (w, h), (1, 2, 3)), "PNG")

    assert _reason(_write(tmp_path, "thin.png", png(1, 5000))) == "absurd_size"  # shorter side 1 < 8
    assert _reason(_write(tmp_path, "tall.png", png(20000, 20))) == "absurd_size"  # longer side > 8192
    assert _reason(_write(tmp_path, "aspect.png", png(88, 8))) == "absurd_size"  # 11 > 10
    big_jpeg = _encode(Image.new("RGB", (9000, 1000)), "JPEG")  # simplejpeg header path
    assert _reason(_write(tmp_path, "wide.jpg", big_jpeg)) == "absurd_size"
    # the bounds are inclusive, and parameters
    assert read_and_check(_write(tmp_path, "edge.png", png(80, 8))).rgb.shape == (80, 8, 3)
    assert read_and_check(tmp_path / "aspect.png", max_aspect=11).rgb.shape == (88, 8, 3)
    with pytest.raises(BadImage, match="absurd_size"):
        read_and_check(tmp_path / "edge.png", min_side=9)


def test_unsupported_mode(tmp_path):
    floats = Image.fromarray(np.full((32, 16), 0.5, np.float32))  # mode F
    assert _reason(_write(tmp_path, "float.tif", _encode(floats, "TIFF"))) == "unsupported_mode"
    big_ints = Image.fromarray(np.full((32, 16), 70000, np.int32))  # mode I, not 16-bit
    assert _reason(_write(tmp_path, "int32.tif", _encode(big_ints, "TIFF"))) == "unsupported_mode"


def test_bad_image_rejects_unknown_reason():
    with pytest.raises(ValueError):
        BadImage("weird")
    error = BadImage("truncated", "cut")
    assert (error.reason, error.detail, str(error)) == ("truncated", "cut", "truncated: cut")


# ---------------------------------------------------------------------------------- good files, converted


def test_rgb_jpeg_fast_path_matches_pillow(tmp_path):
    data = _encode(Image.fromarray(_rng_rgb(128, 64)), "JPEG", quality=90)
    decoded = read_and_check(_write(tmp_path, "ok.jpg", data))
    reference = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert decoded.rgb.dtype == np.uint8 and decoded.rgb.shape == (128, 64, 3) and decoded.rgb.flags.c_contiguous
    assert np.abs(decoded.rgb.astype(int) - reference).max() <= 1
    assert (decoded.orig_height, decoded.orig_width, decoded.mode, decoded.converted) == (128, 64, "RGB", "")
    assert decoded.sha256 == hashlib.sha256(data).hexdigest() == sha256_file(tmp_path / "ok.jpg")


def test_grayscale_jpeg_and_png(tmp_path):
    gray_jpeg = _encode(Image.fromarray(np.full((128, 64), 100, np.uint8)), "JPEG", quality=95)
    decoded = read_and_check(_write(tmp_path, "gray.jpg", gray_jpeg))
    assert (decoded.mode, decoded.converted) == ("L", "L->RGB")
    assert np.array_equal(decoded.rgb, np.full((128, 64, 3), 100, np.uint8))
    ramp = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (32, 1))  # 32 x 64, values 0..252
    decoded = read_and_check(_write(tmp_path, "ramp.png", _encode(Image.fromarray(ramp), "PNG")))
    assert decoded.converted == "L->RGB" and np.array_equal(decoded.rgb, np.stack([ramp] * 3, axis=2))
    bits = np.zeros((16, 16), bool)
    bits[:, 8:] = True
    decoded = read_and_check(_write(tmp_path, "bits.png", _encode(Image.fromarray(bits), "PNG")))
    assert decoded.converted == "1->RGB"
    assert decoded.rgb[0, 0].tolist() == [0, 0, 0] and decoded.rgb[0, 15].tolist() == [255, 255, 255]


def test_cmyk_jpeg(tmp_path):
    source = Image.new("CMYK", (64, 128), (10, 200, 30, 40))
    decoded = read_and_check(_write(tmp_path, "cmyk.jpg", _encode(source, "JPEG", quality=95)))
    assert (decoded.mode, decoded.converted) == ("CMYK", "CMYK->RGB")
    # naive CMYK->RGB of the source colour: 255 - C - K... as Pillow does it, within JPEG error
    expected = np.array(source.convert("RGB").getpixel((0, 0)))
    assert np.abs(decoded.rgb.reshape(-1, 3).astype(int) - expected).max() <= 3
    data = _encode(source, "JPEG", quality=95)
    assert _reason(_write(tmp_path, "cmyk_cut.jpg", data[: len(data) // 2])) == "truncated"


def test_alpha_is_composited_on_black(tmp_path):
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[:, :4, 3] = 255
    rgba[:, 4:8, 3] = 0
    rgba[:, 8:, 3] = 128
    decoded = read_and_check(_write(tmp_path, "rgba.png", _encode(Image.fromarray(rgba), "PNG")))
    assert (decoded.mode, decoded.converted) == ("RGBA", "RGBA->RGB")
    assert decoded.rgb[0, 0].tolist() == [200, 100, 50]
    assert decoded.rgb[0, 5].tolist() == [0, 0, 0]
    assert decoded.rgb[0, 9].tolist() == [100, 50, 25]  # round(200*128/255)=100.4, 50.2, 25.1
    la = np.stack([np.full((16, 16), 255, np.uint8), np.full((16, 16), 51, np.uint8)], axis=2)
    decoded = read_and_check(_write(tmp_path, "la.png", _encode(Image.fromarray(la, "LA"), "PNG")))
    assert decoded.converted == "LA->RGB" and np.all(decoded.rgb == 51)


def test_sixteen_bit_png(tmp_path):
    gray = np.full((20, 10), 65535, np.uint16)
    gray[0, 0], gray[0, 1], gray[0, 2] = 256 * 7 + 200, 0, 255
    decoded = read_and_check(_write(tmp_path, "g16.png", _encode(Image.fromarray(gray), "PNG")))
    assert decoded.mode.startswith("I") and decoded.converted == f"{decoded.mode}->RGB"
    assert decoded.rgb[0, :3, 0].tolist() == [7, 0, 0] and np.all(decoded.rgb[1:] == 255)
    assert np.array_equal(decoded.rgb[..., 0], decoded.rgb[..., 2])
    color = np.full((20, 10, 3), 65535, np.uint16)
    color[0, 0] = [1000, 0, 256 * 7 + 200]  # BGR for OpenCV: blue 1000, red 1992
    ok, buffer = cv2.imencode(".png", color)
    assert ok
    decoded = read_and_check(_write(tmp_path, "c16.png", buffer.tobytes()))
    assert (decoded.mode, decoded.converted) == ("RGB;16", "RGB;16->RGB")
    assert decoded.rgb[0, 0].tolist() == [7, 0, 3] and decoded.rgb[5, 5].tolist() == [255, 255, 255]


def test_palette_png(tmp_path):
    indices = np.array([[0, 1], [2, 0]], np.uint8).repeat(8, axis=0).repeat(8, axis=1)
    palette = Image.fromarray(indices, "P")
    palette.putpalette([255, 0, 0, 0, 255, 0, 10, 20, 30] + [0] * (253 * 3))
    decoded = read_and_check(_write(tmp_path, "p.png", _encode(palette, "PNG")))
    assert (decoded.mode, decoded.converted) == ("P", "P->RGB")
    assert decoded.rgb[0, 0].tolist() == [255, 0, 0] and decoded.rgb[0, 8].tolist() == [0, 255, 0]
    assert decoded.rgb[8, 0].tolist() == [10, 20, 30]
    decoded = read_and_check(_write(tmp_path, "pt.png", _encode(palette, "PNG", transparency=1)))
    assert decoded.converted == "P->RGBA->RGB" and decoded.rgb[0, 8].tolist() == [0, 0, 0]


def test_multiframe_gif_first_frame_and_misnamed_png(tmp_path):
    frames = [Image.new("RGB", (16, 16), (255, 0, 0)), Image.new("RGB", (16, 16), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    decoded = read_and_check(_write(tmp_path, "anim.gif", buffer.getvalue()))
    assert decoded.rgb[0, 0].tolist() == [255, 0, 0] and "2 frames" in decoded.warning
    rgb = _rng_rgb(16, 16)
    decoded = read_and_check(_write(tmp_path, "really_a_png.jpg", _encode(Image.fromarray(rgb), "PNG")))
    assert np.array_equal(decoded.rgb, rgb)


@settings(max_examples=25, deadline=None)
@given(h=st.integers(8, 40), w=st.integers(8, 40), seed=st.integers(0, 2**31 - 1))
def test_png_round_trip_is_exact(h, w, seed):
    rgb = _rng_rgb(h, w, seed)
    if max(h, w) > 10 * min(h, w):
        return
    decoded = decode_bytes(_encode(Image.fromarray(rgb), "PNG"))
    assert np.array_equal(decoded.rgb, rgb) and (decoded.orig_height, decoded.orig_width) == (h, w)


_VALID = {
    "jpeg": _encode(Image.fromarray(_smooth_rgb(32, 16)), "JPEG", quality=80),
    "png": _encode(Image.fromarray(_smooth_rgb(32, 16)), "PNG"),
}


@settings(max_examples=120, deadline=None)
@given(
    kind=st.sampled_from(sorted(_VALID)),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
    cut=st.integers(0, 10_000),
)
def test_damaged_bytes_give_an_image_or_a_reason_never_another_exception(kind, edits, cut):
    data = bytearray(_VALID[kind])
    for position, value in edits:
        data[position % len(data)] = value
    data = bytes(data[: max(1, len(data) - cut % len(data))])
    try:
        decoded = decode_bytes(data)
    except BadImage as error:
        assert error.reason in REASONS
    else:
        assert isinstance(decoded, DecodedImage)
        assert decoded.rgb.dtype == np.uint8 and decoded.rgb.shape == (decoded.orig_height, decoded.orig_width, 3)


# --------------------------------------------------------------------------------------------------- resize


def test_resize_down_is_area_average_up_is_linear():
    rgb = _rng_rgb(64, 32, seed=3)
    half = resize_rgb(rgb, (32, 16))
    block_mean = rgb.reshape(32, 2, 16, 2, 3).astype(np.float64).mean(axis=(1, 3))
    assert half.dtype == np.uint8 and half.shape == (32, 16, 3)
    assert np.abs(half.astype(np.float64) - block_mean).max() <= 0.5 + 1e-9
    up = resize_rgb(rgb, (128, 64))
    assert np.array_equal(up, cv2.resize(rgb, (64, 128), interpolation=cv2.INTER_LINEAR))
    mixed = resize_rgb(rgb, (128, 16))  # one side grows: linear
    assert np.array_equal(mixed, cv2.resize(rgb, (16, 128), interpolation=cv2.INTER_LINEAR))
    assert np.array_equal(resize_rgb(rgb, (64, 32)), rgb)
    constant = np.full((50, 30, 3), (7, 8, 9), np.uint8)
    for size in ((256, 128), (20, 10), (50, 31)):
        assert np.all(resize_rgb(constant, size) == (7, 8, 9))
    with pytest.raises(ValueError):
        resize_rgb(rgb[..., 0], (8, 8))


# ------------------------------------------------------------------------------------------------ real data


@pytest.mark.real_data
def test_real_market_crops_decode(tmp_path):
    folder = SHARED_DATA / "mini_market1501" / "query"
    if not folder.is_dir():
        pytest.skip(f"{folder} absent (real crops live in ../shared/data)")
    for path in sorted(folder.glob("*.jpg")):
        decoded = read_and_check(path)
        assert decoded.rgb.shape == (128, 64, 3) and decoded.converted == ""
        assert np.abs(decoded.rgb.astype(int) - np.asarray(Image.open(path).convert("RGB"))).max() <= 1
