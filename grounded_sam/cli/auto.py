"""Automatic (text-free) masks for the ``auto`` command: SAM's point-grid mask generator."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["run_auto"]


def run_auto(
    images: Sequence[Path],
    out: Path,
    *,
    segmenter: str = "sam2.1_hiera_tiny",
    checkpoint: str | None = None,
    device: str | None = None,
    image_size: int | None = None,
    on_load_error: Callable[[Exception], None] | None = None,
    **generator_options: Any,
) -> dict[str, str]:
    """Write ``<stem>_auto.jpg`` (annotated) and ``<stem>_auto.json`` (COCO RLE masks) per image.

    Returns the inputs that failed (path -> reason); the others are written.
    """
    import supervision as sv
    from PIL import Image

    from grounded_sam.export.annotate import annotate_image
    from grounded_sam.export.records import detections_to_record, dumps
    from grounded_sam.export.safe_io import atomic_write_text, safe_output_path
    from grounded_sam.pipeline.core import make_predictor
    from gsam_runtime.images import load_image
    from segmenter import AutomaticMaskGenerator

    try:
        predictor = make_predictor(segmenter, checkpoint, _device(device), image_size)
        generator = AutomaticMaskGenerator(predictor.model, **generator_options)  # an ONNX folder has no model
    except Exception as e:  # noqa: BLE001
        if on_load_error is None:
            raise
        on_load_error(e)
        return {}
    out.mkdir(parents=True, exist_ok=True)
    failed: dict[str, str] = {}
    for path in images:
        try:
            image = load_image(path)
            det = sv.Detections.from_sam(generator.generate(image))
            det.class_id = _zeros(len(det))
            Image.fromarray(annotate_image(image, det, ["mask"])).save(safe_output_path(out, f"{path.stem}_auto.jpg"))
            record = detections_to_record(det, Path(path).name, image.shape[1], image.shape[0], ["mask"])
            atomic_write_text(safe_output_path(out, f"{path.stem}_auto.json"), dumps(record))
        except Exception as e:  # noqa: BLE001 (reported, the others go on)
            failed[str(path)] = f"{type(e).__name__}: {e}"
    return failed


def _device(device: str | None) -> Any:
    from gsam_runtime.device import resolve_device

    return resolve_device(device)


def _zeros(n: int) -> Any:
    import numpy as np

    return np.zeros(n, dtype=int)
