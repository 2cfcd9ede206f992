"""What every package of grounded-sam shares: the device policy, the image decoder, the RLE codec.

- :mod:`gsam_runtime.device` — ``resolve_device`` (``None`` -> CUDA, then MPS, then CPU; a requested
  device that is missing is an error) and ``autocast`` (bf16 on CUDA, fp32 elsewhere).
- :mod:`gsam_runtime.images` — ``load_image``: paths, bytes, PIL images and arrays -> ``(H, W, 3)``
  uint8 RGB, EXIF-upright, alpha composited, CMYK / 16-bit / palette converted.
- :mod:`gsam_runtime.rle` — COCO run-length encoding of masks (pycocotools): the segmenter's automatic
  masks and grounded_sam's dataset export use the same codec.
- :mod:`gsam_runtime.hub` — models from the Hugging Face Hub: ``require_models`` checks the cache and
  whether the hub answers before anything loads, and raises ``MissingModelsError`` (every model,
  cached or not, and the commands that fetch them) instead of minutes of connection retries.

It imports none of ``ontologies``, ``detectors``, ``segmenter`` or ``grounded_sam``; all four may
import it. Importing it loads neither torch nor PIL.
"""

from gsam_runtime.device import autocast, resolve_device
from gsam_runtime.images import ImageLoadError, ImageSource, load_image, load_image_bytes

__all__ = ["resolve_device", "autocast", "load_image", "load_image_bytes", "ImageLoadError", "ImageSource"]
