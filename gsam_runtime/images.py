"""The one image decoder of every package: files, bytes, PIL images and arrays -> RGB uint8.

:func:`load_image` returns every supported input as an ``(H, W, 3)`` ``uint8`` RGB array, in the
orientation a viewer shows (EXIF orientation applied). What it does with the awkward cases:

- **alpha** (RGBA, LA, PA, palette with transparency): composited over ``background``
  (white by default), so transparent areas look the way a browser on a white page shows them;
  ``background=None`` drops the alpha channel instead (keeps the stored colour of transparent
  pixels, often black: what ``cv2.imread`` and PIL's ``convert("RGB")`` do).
- **CMYK** (JPEG/TIFF): converted through the embedded ICC profile when there is one (to
  sRGB), otherwise with PIL's formula. Adobe's inverted CMYK JPEGs are handled by PIL.
- **palette** (``P``), ``1``, ``L``, ``YCbCr``: converted to RGB, grey replicated.
- **16-bit** grey (``I;16*``) and 32-bit ``I`` are scaled from 0..65535 to 0..255 (``v / 257``,
  rounded), not clipped (PIL's ``convert("RGB")`` saturates them to white). 16-bit RGB(A) PNG
  and TIFF are already reduced to 8 bits by PIL (high byte). Float ``F`` images are taken as
  0..1 when their maximum is at most 1, as 0..255 when at most 255, else as 0..65535.
- multi-frame files (GIF, multi-page TIFF): the first frame.
- corrupt, truncated, zero-byte or unrecognised files raise :class:`ImageLoadError` (a
  ``ValueError``) naming the file and the reason; a missing file raises ``FileNotFoundError``.
- **huge files**: a file with more pixels than the limit (:func:`max_pixels`: by default what
  PIL refuses outright, 2 x ``Image.MAX_IMAGE_PIXELS`` = 178,956,970, a guard against
  decompression bombs) raises :class:`ImageLoadError` naming the flag that raises it
  (``--max-pixels`` / :func:`set_max_pixels` / ``GSAM_MAX_PIXELS``), before any pixel is decoded.
  Within the limit the file is decoded once, without PIL's warning.

Only embedded ICC profiles of CMYK images are applied; RGB images keep their stored values
(the convention of OpenCV, PIL and the detectors' processors).

"""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = [
    "ImageLoadError", "ImageTypeError", "ImageSource", "load_image", "load_image_bytes", "max_pixels", "set_max_pixels",
]

ImageSource = Union[str, os.PathLike, np.ndarray, "PILImage.Image"]

WHITE = (255, 255, 255)

MAX_PIXELS_ENV = "GSAM_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 2 * 89_478_485  # what PIL refuses with DecompressionBombError (2 x its MAX_IMAGE_PIXELS)


def max_pixels() -> int | None:
    """The largest image file (width x height) that :func:`load_image` decodes; ``None``: no limit.

    ``GSAM_MAX_PIXELS`` (set by :func:`set_max_pixels` and the CLI's ``--max-pixels``; ``0`` means
    no limit), else :data:`DEFAULT_MAX_PIXELS`. Read at each load, so worker processes started
    afterwards (labeling pools, local Ray) inherit it.
    """
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip().replace("_", "")
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(raw))
    except ValueError:
        raise ImageLoadError(f"{MAX_PIXELS_ENV}={raw!r} is not a number of pixels (0 = no limit)") from None
    return None if value <= 0 else value


def set_max_pixels(limit: int | None) -> None:
    """Raise (or lower) the pixel limit of image files for this process and the ones it starts.

    ``None`` or ``0``: no limit. Arrays and PIL images passed in are never limited (already decoded).
    """
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise ValueError(f"max_pixels must be a non-negative int or None, got {limit!r}")
    os.environ[MAX_PIXELS_ENV] = str(limit or 0)


class ImageLoadError(ValueError):
    """An image could not be decoded; the message names the file (or input) and the reason."""


class ImageTypeError(ImageLoadError, TypeError):
    """The input is no image at all: neither a path, a PIL image nor an array."""


def load_image(
    image: ImageSource, *, background: tuple[int, int, int] | None = WHITE, name: str | None = None
) -> np.ndarray:
    """Load a path, PIL image or array as an ``(H, W, 3)`` uint8 RGB array (see module docs).

    ``background``: RGB colour that alpha is composited over, or ``None`` to drop alpha.
    ``name``: how errors refer to the input (defaults to the path, or ``"image"``).
    Arrays: ``(H, W, 3)`` is taken as RGB and returned as is (C-contiguous); ``(H, W)`` /
    ``(H, W, 1)`` grey is replicated, ``(H, W, 4)`` is RGBA; ``uint16`` is scaled like 16-bit
    files. Other dtypes raise :class:`ImageLoadError`.
    """
    from PIL import Image

    if isinstance(image, np.ndarray):
        return _from_array(image, name or "image", background)
    if isinstance(image, Image.Image):
        return _from_pil(image, name or "image", background)
    if isinstance(image, (str, os.PathLike)):
        return _from_path(Path(image), name or str(image), background)
    raise ImageTypeError(
        f"{name or 'image'}: expected an image path, PIL image or numpy array, got {type(image).__name__}"
    )


def _from_path(path: Path, name: str, background: tuple[int, int, int] | None) -> np.ndarray:
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {name!r}")
    if path.is_dir():
        raise ImageLoadError(f"cannot load image {name!r}: it is a directory")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ImageLoadError(f"cannot load image {name!r}: {e.strerror or e}") from e
    if size == 0:
        raise ImageLoadError(f"cannot load image {name!r}: the file is empty (0 bytes)")
    return _decode(path, name, background)


def load_image_bytes(data: bytes, name: str = "image", background: tuple[int, int, int] | None = (255, 255, 255)) -> np.ndarray:
    """:func:`load_image` for encoded file contents (e.g. read from a remote filesystem)."""
    if not data:
        raise ImageLoadError(f"cannot load image {name!r}: the file is empty (0 bytes)")
    return _decode(io.BytesIO(data), name, background)


def _decode(source: Any, name: str, background: tuple[int, int, int] | None) -> np.ndarray:
    """Open a path or file object with PIL; every decoding failure becomes an ImageLoadError."""
    from PIL import Image, UnidentifiedImageError

    limit = max_pixels()
    try:
        with warnings.catch_warnings():
            # PIL's own guard (a warning above MAX_IMAGE_PIXELS, an error above twice that) reads a
            # global at open time; ours below names the flag, so PIL's is widened to ours
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            _widen_pil_guard(Image, limit)
            with Image.open(source) as im:
                pixels = im.width * im.height
                if limit is not None and pixels > limit:
                    raise ImageLoadError(_too_many_pixels(name, pixels, limit, f"{im.width} x {im.height} = "))
                im.load()
                return _from_pil(im, name, background)
    except ImageLoadError:
        raise
    except UnidentifiedImageError as e:
        raise ImageLoadError(f"cannot load image {name!r}: not a recognised image format") from e
    except Image.DecompressionBombError as e:  # PIL's guard fired first (pixels over 2 x its setting >= limit)
        found = re.search(r"\((\d+) pixels\)", str(e))
        pixels = int(found.group(1)) if found else 0
        raise ImageLoadError(_too_many_pixels(name, pixels, limit or pixels, "")) from e
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        raise ImageLoadError(f"cannot load image {name!r}: corrupt or unsupported file ({e})") from e


def _too_many_pixels(name: str, pixels: int, limit: int, size: str) -> str:
    return (
        f"cannot load image {name!r}: {size}{pixels:,} pixels is over the limit of {limit:,} (a guard against "
        f"decompression bombs); if the file is trusted, raise it with --max-pixels {pixels} (Python: "
        f"gsam_runtime.images.set_max_pixels({pixels}), or {MAX_PIXELS_ENV}={pixels}; 0 = no limit)"
    )


def _widen_pil_guard(image_module: Any, limit: int | None) -> None:
    """Make PIL's decompression-bomb check no stricter than ``limit`` (it errors above 2x its setting)."""
    current = image_module.MAX_IMAGE_PIXELS
    if current is None:
        return
    if limit is None:
        image_module.MAX_IMAGE_PIXELS = None
    elif 2 * current < limit:
        image_module.MAX_IMAGE_PIXELS = (limit + 1) // 2


def _from_pil(im: PILImage.Image, name: str, background: tuple[int, int, int] | None) -> np.ndarray:
    from PIL import ImageOps

    if im.width == 0 or im.height == 0:
        raise ImageLoadError(f"cannot load image {name!r}: it is empty ({im.width}x{im.height})")
    try:
        if im.getexif().get(0x0112, 1) != 1:  # orientation tag; skip the copy when upright
            im = ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the pixels
        pass
    mode = im.mode
    if mode == "RGB":
        return np.array(im, dtype=np.uint8)
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _grey_to_rgb(_high_depth_to_u8(np.asarray(im), mode))
    if mode == "CMYK":
        return np.array(_cmyk_to_rgb(im), dtype=np.uint8)
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode in ("PA", "La", "LA", "RGBa", "RGBX"):
        im = im.convert("RGBA")
    elif mode in ("1", "L"):
        return _grey_to_rgb(np.asarray(im.convert("L")))
    if im.mode == "RGBA":
        return _apply_alpha(np.asarray(im), background)
    if im.mode == "RGB":
        return np.array(im, dtype=np.uint8)
    try:
        return np.array(im.convert("RGB"), dtype=np.uint8)
    except (ValueError, OSError) as e:
        raise ImageLoadError(f"cannot load image {name!r}: unsupported image mode {mode!r}") from e


def _cmyk_to_rgb(im: PILImage.Image) -> PILImage.Image:
    icc = im.info.get("icc_profile")
    if icc:
        try:
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except Exception:  # noqa: BLE001 - a bad profile falls back to the plain formula
            pass
    return im.convert("RGB")


def _high_depth_to_u8(a: np.ndarray, mode: str) -> np.ndarray:
    a = a.astype(np.float64)
    if mode == "F":
        top = float(np.nanmax(a)) if a.size else 0.0
        scale = 255.0 if top <= 1.0 else (1.0 if top <= 255.0 else 1.0 / 257.0)
        a = np.nan_to_num(a) * scale
    else:  # I;16* and I hold 0..65535 (16-bit files); I is clipped to that range
        a = np.clip(a, 0, 65535) / 257.0
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _grey_to_rgb(a: np.ndarray) -> np.ndarray:  # (H, W) -> (H, W, 3)
    return np.ascontiguousarray(np.repeat(a[:, :, None], 3, axis=2).astype(np.uint8, copy=False))


def _apply_alpha(rgba: np.ndarray, background: tuple[int, int, int] | None) -> np.ndarray:
    rgb = rgba[..., :3]
    if background is None:
        return np.ascontiguousarray(rgb, dtype=np.uint8)
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0  # (H, W, 1)
    bg = np.asarray(background, dtype=np.float32).reshape(1, 1, 3)
    out = rgb.astype(np.float32) * alpha + bg * (1.0 - alpha)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _from_array(a: np.ndarray, name: str, background: tuple[int, int, int] | None) -> np.ndarray:
    if a.dtype == np.uint16:
        a = _high_depth_to_u8(a, "I;16")
    if a.dtype != np.uint8:
        raise ImageLoadError(
            f"{name}: expected a uint8 RGB array, got dtype {a.dtype}; convert floats in [0, 1] with "
            "(a * 255).round().clip(0, 255).astype(np.uint8)"
        )
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ImageLoadError(f"{name}: expected an (H, W, 3) RGB array, got shape {tuple(a.shape)}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ImageLoadError(f"{name}: the image is empty (shape {tuple(a.shape)})")
    if a.ndim == 2:
        return _grey_to_rgb(a)
    if a.shape[2] == 4:
        return _apply_alpha(a, background)
    return np.ascontiguousarray(a)
