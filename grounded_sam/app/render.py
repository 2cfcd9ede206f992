"""The overlay the page shows: the project's annotation plus what is being edited.

:func:`render_session` draws the objects with :func:`grounded_sam.export.annotate.annotate_image`
(masks, boxes, ``class score`` labels), then outlines the selected object in white, marks its
clicks (green foreground, red background), the first corner of a box being drawn, and the
exemplar boxes of ``sam3`` (dashed white, labelled ``exemplar: class``).
"""

from __future__ import annotations

import cv2
import numpy as np

from grounded_sam.export.annotate import annotate_image
from grounded_sam.app.session import ImageSession

__all__ = ["render_session"]

_FG, _BG, _WHITE = (40, 220, 60), (235, 40, 40), (255, 255, 255)


def render_session(session: ImageSession) -> np.ndarray:
    """The annotated image (H, W, 3) uint8 RGB of a session (module docs)."""
    canvas = annotate_image(session.image, session.to_detections(), session.classes)
    h, w = session.hw
    thickness = max(1, round(max(h, w) / 400))
    radius = max(3, round(max(h, w) / 120))
    if session.selected is not None:
        obj = session.objects[session.selected]
        contours, _ = cv2.findContours(obj.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(canvas, contours, -1, _WHITE, thickness + 1)
        for (x, y), label in zip(obj.points, obj.labels):
            centre = (int(round(x)), int(round(y)))
            cv2.circle(canvas, centre, radius, _FG if label else _BG, -1)
            cv2.circle(canvas, centre, radius, _WHITE, 1)
    if session.corner is not None:
        x, y = (int(round(v)) for v in session.corner)
        cv2.drawMarker(canvas, (x, y), _WHITE, cv2.MARKER_CROSS, 3 * radius, thickness + 1)
    for name, boxes in session.exemplars.items():
        for box in boxes:
            _dashed_box(canvas, box, thickness)
            x0, y0 = int(box[0]), int(box[1])
            cv2.putText(canvas, f"exemplar: {name}", (x0 + 2, max(y0 - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX,
                        max(0.3, max(h, w) / 1600), _WHITE, 1, cv2.LINE_AA)
    return canvas


def _dashed_box(canvas: np.ndarray, box: list[float], thickness: int, dash: int = 6) -> None:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    for a, b in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))):
        length = max(abs(b[0] - a[0]), abs(b[1] - a[1]), 1)
        for s in range(0, length, 2 * dash):
            e = min(s + dash, length)
            p = (a[0] + (b[0] - a[0]) * s // length, a[1] + (b[1] - a[1]) * s // length)
            q = (a[0] + (b[0] - a[0]) * e // length, a[1] + (b[1] - a[1]) * e // length)
            cv2.line(canvas, p, q, _WHITE, thickness)
