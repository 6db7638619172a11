"""Decoding of odd image files: every mode to RGB uint8, clear errors on broken files."""
import io

import numpy as np
import pytest
from PIL import Image

from vireid.data.images import decode_image, resize_rgb, to_rgb_array
from vireid.errors import DataError


def _save(img: Image.Image, path, fmt="PNG"):
    img.save(path, format=fmt)
    return path


def test_grayscale_is_replicated(tmp_path):
    g = np.arange(12 * 7, dtype=np.uint8).reshape(12, 7)
    out = decode_image(_save(Image.fromarray(g, "L"), tmp_path / "g.png"))
    assert out.shape == (12, 7, 3) and out.dtype == np.uint8
    for c in range(3):
        assert np.array_equal(out[:, :, c], g)


def test_rgba_drops_alpha(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (5, 4, 4), dtype=np.uint8)
    out = decode_image(_save(Image.fromarray(a, "RGBA"), tmp_path / "a.png"))
    assert np.array_equal(out, a[:, :, :3])


def test_16bit_is_scaled_down(tmp_path):
    vals = np.array([[0, 257, 65535], [1000, 30000, 50000]], dtype=np.uint16)
    expected = np.array([[round(v / 257) for v in row] for row in vals.tolist()], np.uint8)
    # In memory, as PIL's 16-bit mode ...
    im16 = Image.fromarray(vals)
    assert im16.mode.startswith("I;16")
    assert np.array_equal(to_rgb_array(im16)[:, :, 1], expected)
    # ... as 32-bit "I" (how some PIL versions open 16-bit PNGs) ...
    im32 = Image.fromarray(vals.astype(np.int32), "I")
    assert np.array_equal(to_rgb_array(im32)[:, :, 0], expected)
    # ... and through a real 16-bit PNG file.
    out = decode_image(_save(im16, tmp_path / "d.png"))
    assert np.array_equal(out[:, :, 2], expected)


def test_mode_I_with_8bit_values_is_kept():
    vals = np.array([[0, 17, 255]], dtype=np.int32)
    assert np.array_equal(to_rgb_array(Image.fromarray(vals, "I"))[0, :, 0], [0, 17, 255])


def test_palette_image(tmp_path):
    pal = [10, 20, 30, 200, 100, 0] + [0] * (256 * 3 - 6)
    idx = np.array([[0, 1], [1, 0]], dtype=np.uint8)
    im = Image.fromarray(idx, "P")
    im.putpalette(pal)
    out = decode_image(_save(im, tmp_path / "p.png"))
    for y in range(2):
        for x in range(2):
            k = idx[y, x]
            assert out[y, x].tolist() == pal[3 * k:3 * k + 3]


def test_cmyk_extremes(tmp_path):
    a = np.zeros((2, 2, 4), np.uint8)
    a[1, :, 3] = 255  # full black ink
    out = decode_image(_save(Image.fromarray(a, "CMYK"), tmp_path / "c.jpg", "JPEG"))
    assert out.shape == (2, 2, 3)
    assert out[0].min() >= 250 and out[1].max() <= 5


def test_tiny_image_resized(tmp_path):
    out = decode_image(_save(Image.new("RGB", (1, 1), (9, 99, 199)), tmp_path / "t.png"),
                       size=(6, 3))
    assert out.shape == (6, 3, 3)
    assert (out == np.array([9, 99, 199], np.uint8)).all()


def test_resize_keeps_constant_and_shape():
    a = np.full((40, 20, 3), 77, np.uint8)
    b = resize_rgb(a, (128, 64))
    assert b.shape == (128, 64, 3) and (b == 77).all()
    with pytest.raises(ValueError):
        resize_rgb(a, (0, 5))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found.*nope.jpg"):
        decode_image(tmp_path / "nope.jpg")


def test_corrupt_file_names_the_file(tmp_path):
    p = tmp_path / "bad.jpg"
    p.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(DataError) as e:
        decode_image(p)
    assert "bad.jpg" in str(e.value) and "cannot decode" in str(e.value)


def test_truncated_jpeg(tmp_path):
    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    p = tmp_path / "trunc.jpg"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(DataError, match="trunc.jpg"):
        decode_image(p)
