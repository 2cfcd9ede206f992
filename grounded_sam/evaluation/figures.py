"""The report's pictures: precision-recall curves (matplotlib, headless) and the worst images drawn
with their ground truth beside their predictions (the annotator of :mod:`grounded_sam.export.annotate`)."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np

from grounded_sam.evaluation.data import EvalSet

__all__ = ["pr_curve_png", "side_by_side_png", "safe_name"]


def safe_name(name: str) -> str:
    """A file-name-safe form of a class or image name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "x"


def pr_curve_png(name: str, curve: dict[str, list[float]], operating: dict[str, Any] | None = None) -> bytes:
    """One class's precision-recall curve as PNG bytes, the labels' own operating point marked."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 3.2), dpi=100)
    ax = fig.add_subplot()
    if curve["recall"]:
        ax.step(curve["recall"], curve["precision"], where="post", color="tab:blue", label="every threshold")
    if operating and operating.get("precision") is not None and operating.get("recall") is not None:
        ax.plot([operating["recall"]], [operating["precision"]], "o", color="tab:red", label="the labels")
    ax.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=name)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _detections(data: EvalSet, key: str, h: int, w: int, classes: list[str]) -> Any:
    import supervision as sv
    from pycocotools import mask as mask_utils

    rows = [i for i in data.instances if i.image == key]
    masks = np.zeros((len(rows), h, w), bool)
    for k, inst in enumerate(rows):
        if inst.rle is not None:
            masks[k] = mask_utils.decode(inst.rle).astype(bool)
    xyxy = np.array([[x, y, x + bw, y + bh] for x, y, bw, bh in (i.bbox for i in rows)], np.float32).reshape(-1, 4)
    return sv.Detections(xyxy=xyxy, mask=masks if any(i.rle is not None for i in rows) else None,
                         confidence=np.array([i.score for i in rows], np.float32),
                         class_id=np.array([classes.index(i.category) for i in rows], int))


def side_by_side_png(image: str | Path, key: str, gt: EvalSet, pred: EvalSet) -> bytes:
    """The image with its ground truth (left) and the predictions (right), as PNG bytes."""
    from PIL import Image

    from grounded_sam.export.annotate import annotate_image
    from gsam_runtime.images import load_image

    rgb = load_image(image)
    h, w = rgb.shape[:2]
    left = annotate_image(rgb, _detections(gt, key, h, w, gt.classes), gt.classes)
    right = annotate_image(rgb, _detections(pred, key, h, w, gt.classes), gt.classes)
    gap = np.full((h, max(4, w // 50), 3), 255, np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.concatenate([left, gap, right], axis=1)).save(buf, format="PNG")
    return buf.getvalue()
