"""A click on an image, as the image and review views treat it, and the image's downloads.

:func:`apply_click` turns one click in one of :data:`CLICK_MODES` into a change of an
:class:`~grounded_sam.app.session.ImageSession` (selection, a click or box prompt refined on the
cached embedding, an exemplar box) and returns what to tell the user. :func:`export_coco` and
:func:`export_masks` write what the page offers for download.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from grounded_sam.app.models import AppModels
from grounded_sam.app.session import ImageSession
from grounded_sam.export.coco import CocoWriter

__all__ = ["CLICK_MODES", "SELECT", "FOREGROUND", "BACKGROUND", "BOX", "EXEMPLAR", "apply_click", "export_coco",
           "export_masks"]

SELECT, FOREGROUND, BACKGROUND, BOX, EXEMPLAR = (
    "select", "add (+ click)", "remove (- click)", "box (2 clicks)", "exemplar box (sam3)")
CLICK_MODES = (SELECT, FOREGROUND, BACKGROUND, BOX, EXEMPLAR)


def apply_click(models: AppModels, session: ImageSession, mode: str, x: float, y: float) -> str:
    """Apply a click at pixel (x, y); returns a status line. Raises ``ValueError`` / ``AppError``."""
    if mode == SELECT:
        i = session.select_at(x, y)
        if i is None:
            return "nothing here: a + click or a box now starts a new object"
        obj = session.objects[i]
        return f"selected #{i} {session.classes[obj.class_id]} ({obj.area} px)"
    if mode in (FOREGROUND, BACKGROUND):
        obj = session.add_click(x, y, positive=mode == FOREGROUND)
    elif mode in (BOX, EXEMPLAR):
        box = session.add_corner(x, y)
        if box is None:
            return "first corner set: click the opposite corner"
        if mode == EXEMPLAR:
            session.add_exemplar(box)
            return f"exemplar box of {session.classes[session.current_class]} added: press Detect"
        obj = session.set_box(box)
    else:
        raise ValueError(f"unknown click mode {mode!r}; one of {CLICK_MODES}")
    mask, score = models.refine(session.key, session.image, obj.points, obj.labels, obj.box)
    session.set_mask(obj, mask, score)
    i = session.index_of(obj)
    return f"#{i} {session.classes[obj.class_id]}: {obj.area} px (IoU score {score:.2f})"


def _stem(name: str) -> str:
    """``name``'s stem as a safe file name part: runs of other than ``A-Za-z0-9._-`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem).strip("._") or "image"


def export_coco(session: ImageSession, folder: Path) -> Path:
    """The session as a COCO instance-segmentation file (RLE masks); returns its path.

    The file is ``<stem>_coco.json`` (the image's name, sanitised); its image's ``file_name`` is the
    image's base name as uploaded (``street.jpg``).
    """
    h, w = session.hw
    path = Path(folder) / f"{_stem(session.name)}_coco.json"
    with CocoWriter(path, session.classes) as writer:
        writer.add_image(Path(session.name).name, w, h, session.to_detections())
    return path


def export_masks(session: ImageSession, folder: Path) -> Path:
    """One PNG per object (0 / 255, ``<index>_<class>.png``) in ``<stem>_masks.zip``; returns its path."""
    path = Path(folder) / f"{_stem(session.name)}_masks.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, obj in enumerate(o for o in session.objects if o.mask.any()):
            buf = io.BytesIO()
            Image.fromarray(obj.mask.astype(np.uint8) * 255).save(buf, format="PNG")
            zf.writestr(f"{i:03d}_{_stem(session.classes[obj.class_id])}.png", buf.getvalue())
    return path
