"""Image decoding: formats, shrinking, draft mode, and the errors of bad input."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from lsic.pipeline import ImageError, load_image


def _encode(arr: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **kw)
    return buf.getvalue()


def _smooth_rgb(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    r = 127 + 100 * np.sin(x / 37.0)
    g = 127 + 100 * np.cos(y / 23.0)
    b = 127 + 100 * np.sin((x + y) / 51.0)
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def test_png_gray_values_exact():
    arr = (np.arange(40 * 30) % 256).astype(np.uint8).reshape(30, 40)
    out = load_image(_encode(arr, "PNG"))
    assert out.dtype == np.float32 and out.shape == (30, 40)
    np.testing.assert_array_equal(out, arr.astype(np.float32) / 255.0)


def test_rgb_uses_luma_and_range():
    rgb = _smooth_rgb(50, 60)
    out = load_image(_encode(rgb, "PNG"))
    luma = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.float32) / 255.0
    np.testing.assert_array_equal(out, luma)
    assert 0.0 <= out.min() <= out.max() <= 1.0


def test_max_side_shrinks_keeping_aspect_and_never_enlarges():
    data = _encode(_smooth_rgb(300, 800), "PNG")
    out = load_image(data, max_side=200)
    assert out.shape == (75, 200)
    assert load_image(data, max_side=1000).shape == (300, 800)


def test_sixteen_bit_png():
    arr = np.linspace(0, 65535, 20 * 10).astype(np.uint16).reshape(10, 20)
    out = load_image(_encode(arr, "PNG"))
    np.testing.assert_allclose(out, arr / 65535.0, atol=1e-6)


def test_large_jpeg_is_decoded_through_draft_mode(monkeypatch):
    rgb = _smooth_rgb(2400, 3200)
    data = _encode(rgb, "JPEG", quality=90)
    calls = []
    orig = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        res = orig(self, mode, size)
        calls.append((mode, size, self.size))
        return res

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    out = load_image(data, max_side=500)
    assert out.shape == (375, 500)
    # draft picked the 1/4 DCT scale: 3200x2400 -> 800x600, then resized to 500
    assert calls and calls[0][0] == "L" and calls[0][2] == (800, 600)
    # close to a full-resolution decode resized the ordinary way
    full = Image.open(io.BytesIO(data)).convert("L").resize((500, 375), Image.Resampling.BILINEAR,
                                                            reducing_gap=2.0)
    ref = np.asarray(full, dtype=np.float32) / 255.0
    assert np.abs(out - ref).mean() < 0.01


def test_small_jpeg_not_drafted():
    out = load_image(_encode(_smooth_rgb(120, 160), "JPEG"), max_side=500)
    assert out.shape == (120, 160)


@pytest.mark.parametrize(
    "data, what",
    [
        (b"", "empty"),
        (b"this is not an image at all" * 10, "not an image"),
    ],
)
def test_bad_bytes_raise_image_error_naming_input(data, what):
    with pytest.raises(ImageError, match="cat_0001.jpg") as err:
        load_image(data, name="cat_0001.jpg")
    assert what in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_raises_image_error(fmt):
    data = _encode(_smooth_rgb(200, 200), fmt)
    with pytest.raises(ImageError, match="truncated.jpg"):
        load_image(data[: len(data) // 2], name="truncated.jpg")


def test_corrupt_body_raises_image_error():
    data = bytearray(_encode(_smooth_rgb(64, 64), "PNG"))
    data[60:200] = b"\x00" * 140  # clobber the IDAT stream
    with pytest.raises(ImageError, match="corrupt.png"):
        load_image(bytes(data), name="corrupt.png")


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height, with one tiny IDAT: a bomb's header."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "side, pattern",
    [
        (12_000, r"bomb\.png.*12000x12000.*max_pixels=100000000"),  # lsic's own limit
        (30_000, r"bomb\.png.*decompression bomb.*max_pixels"),  # also above Pillow's ceiling
    ],
)
def test_decompression_bomb_refused_before_decode(monkeypatch, side, pattern):
    data = _png_header_only(side, side)
    loads = []
    orig = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: loads.append(1) or orig(self))
    with pytest.raises(ImageError, match=pattern):
        load_image(data, name="bomb.png")
    assert loads == []  # refused from the header, nothing decoded


def test_pixel_limit_is_configurable():
    data = _encode(_smooth_rgb(100, 100), "PNG")
    with pytest.raises(ImageError, match="max_pixels=5000"):
        load_image(data, max_pixels=5000)
    assert load_image(data, max_pixels=10_000).shape == (100, 100)
