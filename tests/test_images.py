"""gsam_runtime.images: robust loading of awkward image files, and listing folders."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from grounded_sam.pipeline.files import list_images
from gsam_runtime.images import ImageLoadError, load_image, load_image_bytes


def _rgb(h: int = 12, w: int = 16) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_rgb_png_round_trip(tmp_path):
    a = _rgb()
    Image.fromarray(a).save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == a.shape and out.flags.c_contiguous
    np.testing.assert_array_equal(out, a)
    np.testing.assert_array_equal(load_image(str(tmp_path / "a.png")), a)
    np.testing.assert_array_equal(load_image(Image.open(tmp_path / "a.png")), a)


def test_exif_orientation_applied(tmp_path):
    a = _rgb(10, 20)
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    im.save(tmp_path / "rot.png", exif=exif)
    out = load_image(tmp_path / "rot.png")
    assert out.shape == (20, 10, 3)
    np.testing.assert_array_equal(out, np.rot90(a, k=-1))


def test_rgba_composited_over_white_or_dropped(tmp_path):
    a = np.zeros((4, 6, 4), dtype=np.uint8)
    a[..., 0] = 200  # red-ish everywhere
    a[0, :, 3] = 0  # fully transparent row
    a[1, :, 3] = 255  # opaque row
    a[2, :, 3] = 128  # half
    Image.fromarray(a, "RGBA").save(tmp_path / "rgba.png")
    out = load_image(tmp_path / "rgba.png")
    assert out.shape == (4, 6, 3)
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(out[1, 0], [200, 0, 0])
    expect = np.rint(np.array([200, 0, 0]) * 128 / 255 + 255 * (1 - 128 / 255))
    np.testing.assert_array_equal(out[2, 0], expect)
    dropped = load_image(tmp_path / "rgba.png", background=None)
    np.testing.assert_array_equal(dropped, a[..., :3])
    black = load_image(tmp_path / "rgba.png", background=(0, 0, 0))
    np.testing.assert_array_equal(black[0, 0], [0, 0, 0])


def test_la_and_grey(tmp_path):
    la = np.zeros((3, 5, 2), dtype=np.uint8)
    la[..., 0] = 90
    la[..., 1] = 255
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(load_image(tmp_path / "la.png"), np.full((3, 5, 3), 90, np.uint8))
    g = np.arange(15, dtype=np.uint8).reshape(3, 5) * 10
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    out = load_image(tmp_path / "g.png")
    assert out.shape == (3, 5, 3)
    np.testing.assert_array_equal(out[..., 1], g)


def test_palette_png_with_and_without_transparency(tmp_path):
    idx = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    im = Image.fromarray(idx, "P")
    im.putpalette([10, 20, 30, 200, 100, 50, 0, 255, 0] + [0] * (256 * 3 - 9))
    im.save(tmp_path / "p.png")
    out = load_image(tmp_path / "p.png")
    np.testing.assert_array_equal(out[0, 0], [10, 20, 30])
    np.testing.assert_array_equal(out[1, 0], [0, 255, 0])
    im.save(tmp_path / "pt.png", transparency=0)  # index 0 fully transparent
    out_t = load_image(tmp_path / "pt.png")
    np.testing.assert_array_equal(out_t[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(out_t[0, 1], [200, 100, 50])


def test_cmyk_jpeg_converted_to_rgb(tmp_path):
    a = np.zeros((16, 16, 3), dtype=np.uint8)
    a[:8] = [200, 50, 100]
    a[8:] = [20, 180, 240]
    Image.fromarray(a).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    out = load_image(tmp_path / "cmyk.jpg")
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - a).max() <= 6


def test_16bit_grey_png_scaled_not_saturated(tmp_path):
    v = np.arange(0, 256, 8, dtype=np.uint16).reshape(4, 8)
    Image.fromarray(v * 257).save(tmp_path / "g16.png")  # full 16-bit range
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    out = load_image(tmp_path / "g16.png")
    assert out.shape == (4, 8, 3)
    np.testing.assert_array_equal(out[..., 0], v.astype(np.uint8))
    # the naive conversion saturates: what this loader avoids
    assert (np.asarray(Image.open(tmp_path / "g16.png").convert("L")) == 255).sum() > (out[..., 0] == 255).sum()


def test_16bit_rgb_png_and_tiff(tmp_path):
    rgb16 = np.zeros((5, 7, 3), dtype=np.uint16)
    rgb16[..., 0] = 65535
    rgb16[..., 1] = 30000
    rgb16[..., 2] = 1000
    bgr16 = np.ascontiguousarray(rgb16[..., ::-1])
    for name in ("c16.png", "c16.tif"):
        assert cv2.imwrite(str(tmp_path / name), bgr16)
        out = load_image(tmp_path / name)
        np.testing.assert_array_equal(out[0, 0], (rgb16[0, 0] >> 8).astype(np.uint8), err_msg=name)
    grey16 = np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000
    assert cv2.imwrite(str(tmp_path / "g16.tif"), grey16)
    out = load_image(tmp_path / "g16.tif")
    np.testing.assert_array_equal(out[..., 2], np.rint(grey16 / 257).astype(np.uint8))


def test_32bit_int_and_float_tiff(tmp_path):
    v = np.arange(24, dtype=np.int32).reshape(4, 6) * 2000  # 16-bit range held in mode I
    Image.fromarray(v, "I").save(tmp_path / "i.tif")
    np.testing.assert_array_equal(load_image(tmp_path / "i.tif")[..., 0], np.rint(v / 257).astype(np.uint8))
    f = np.linspace(0, 1, 24, dtype=np.float32).reshape(4, 6)
    Image.fromarray(f, "F").save(tmp_path / "f.tif")
    np.testing.assert_array_equal(load_image(tmp_path / "f.tif")[..., 1], np.rint(f * 255).astype(np.uint8))


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("empty.jpg", b"", "empty"),
        ("garbage.jpg", b"\x00\x01not an image at all" * 10, "not a recognised image format"),
        ("text.png", b"hello world\n", "not a recognised image format"),
    ],
)
def test_bad_files_raise_image_load_error(tmp_path, name, content, reason):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(ImageLoadError, match=reason) as e:
        load_image(p)
    assert name in str(e.value)
    assert isinstance(e.value, ValueError)


def test_truncated_jpeg_raises(tmp_path):
    Image.fromarray(_rgb(64, 64)).save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="cut.jpg"):
        load_image(tmp_path / "cut.jpg")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageLoadError, match="directory"):
        load_image(tmp_path)


def test_arrays():
    a = _rgb()
    out = load_image(a)
    np.testing.assert_array_equal(out, a)
    assert load_image(a[:, :, 0]).shape == a.shape
    assert load_image(a[:, :, :1]).shape == a.shape
    np.testing.assert_array_equal(load_image(a.astype(np.uint16) * 257), a)
    rgba = np.concatenate([a, np.full(a.shape[:2] + (1,), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(load_image(rgba), a)
    with pytest.raises(ImageLoadError, match="float32"):
        load_image(a.astype(np.float32))
    with pytest.raises(ImageLoadError, match="shape"):
        load_image(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ImageLoadError, match="empty"):
        load_image(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(TypeError):
        load_image(42)  # type: ignore[arg-type]


def test_list_images(tmp_path):
    for rel in ["b.JPG", "a.jpg", "c.jpeg", "d.png", ".hidden.jpg", "sub/e.jpg", "sub/deeper/f.Jpg", ".cache/g.jpg"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    (tmp_path / "dir.jpg").mkdir()
    names = lambda ps: [p.relative_to(tmp_path).as_posix() for p in ps]  # noqa: E731
    assert names(list_images(tmp_path)) == ["a.jpg", "b.JPG"]
    assert names(list_images(tmp_path, "JPG")) == ["a.jpg", "b.JPG"]
    assert names(list_images(tmp_path, (".jpg", ".png"))) == ["a.jpg", "b.JPG", "d.png"]
    assert names(list_images(tmp_path, ".jpg", recursive=True)) == ["a.jpg", "b.JPG", "sub/deeper/f.Jpg", "sub/e.jpg"]
    assert names(list_images(tmp_path, None)) == ["a.jpg", "b.JPG", "c.jpeg", "d.png"]
    assert names(list_images(tmp_path, ".jpg", recursive=True, exclude=tmp_path / "sub")) == ["a.jpg", "b.JPG"]
    with pytest.raises(FileNotFoundError):
        list_images(tmp_path / "missing")
    with pytest.raises(NotADirectoryError):
        list_images(tmp_path / "a.jpg")
    with pytest.raises(ValueError, match="extension"):
        list_images(tmp_path, ())


def test_pixel_limit_names_the_flag_and_can_be_raised(tmp_path, monkeypatch):
    from gsam_runtime.images import MAX_PIXELS_ENV, max_pixels, set_max_pixels

    path = tmp_path / "big.png"
    Image.fromarray(_rgb(30, 40)).save(path)  # 1,200 pixels
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    with pytest.raises(ImageLoadError, match=r"40 x 30 = 1,200 pixels is over the limit of 1,000.*--max-pixels 1200"):
        load_image(path)
    with pytest.raises(ImageLoadError, match="over the limit"):
        load_image_bytes(path.read_bytes(), name="big.png")
    assert load_image(_rgb(30, 40)).shape == (30, 40, 3)  # arrays are already decoded: never limited
    set_max_pixels(1200)
    assert max_pixels() == 1200
    np.testing.assert_array_equal(load_image(path), _rgb(30, 40))
    set_max_pixels(None)
    assert max_pixels() is None and load_image(path).shape == (30, 40, 3)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ImageLoadError, match="GSAM_MAX_PIXELS='lots' is not a number"):
        load_image(path)
    with pytest.raises(ValueError, match="non-negative"):
        set_max_pixels(-1)


def test_our_limit_overrides_pils_narrower_guard(tmp_path, monkeypatch):
    """PIL refuses files over 2 x Image.MAX_IMAGE_PIXELS at open; a file within our limit still loads,
    without PIL's warning, and one over both gets our message (not PIL's) naming the flag."""
    import warnings

    from gsam_runtime.images import MAX_PIXELS_ENV

    path = tmp_path / "big.png"
    Image.fromarray(_rgb(30, 40)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL alone: error above 200 pixels
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)
    monkeypatch.setenv(MAX_PIXELS_ENV, "5000")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(load_image(path), _rgb(30, 40))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    monkeypatch.delenv(MAX_PIXELS_ENV)  # the default, 2 x PIL's default, is larger than the patched guard
    assert load_image(path).shape == (30, 40, 3)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    monkeypatch.setenv(MAX_PIXELS_ENV, "150")  # PIL (200) would let a 13x13 file through; ours not
    small = tmp_path / "small.png"
    Image.fromarray(_rgb(13, 13)).save(small)
    with pytest.raises(ImageLoadError, match="--max-pixels 169"):
        load_image(small)
