"""Running a pipeline on the ground truth's images: :func:`predict_ground_truth`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from grounded_sam.evaluation.data import EvalInputError, EvalSet, from_detections

__all__ = ["predict_ground_truth"]


def predict_ground_truth(pipeline: Any, gt: EvalSet, ground_truth: Any, images: str | Path | None = None,
                         batch_size: int = 1) -> tuple[EvalSet, Path]:
    """``pipeline``'s predictions of the ground truth's images, ``batch_size`` at a time, and the
    folder they were found in: under ``images``, by their file names (default: the folder of a COCO
    ground-truth file, or the ``label`` folder itself)."""
    if images is not None:
        root = Path(images)
    elif isinstance(ground_truth, (str, Path)):
        source = Path(ground_truth)
        root = source if source.is_dir() else source.parent
    else:
        raise EvalInputError("give images= (the folder the ground truth's file names are relative to)")
    keys = sorted(gt.images)
    paths = {k: next((p for p in (root / gt.images[k].path, root / k) if p.is_file()), None) for k in keys}
    missing = [k for k, p in paths.items() if p is None]
    if missing:
        raise EvalInputError(f"{len(missing)} ground-truth image(s) are not in {root}: {missing[:5]}")
    found = {}
    step = max(1, int(batch_size))
    for start in range(0, len(keys), step):
        chunk = keys[start:start + step]
        found.update(zip(chunk, pipeline.predict_batch([paths[k] for k in chunk])))
    predictions = from_detections(found, pipeline.classes)
    predictions.source = f"{type(pipeline).__name__} on {root}"
    return predictions, root
