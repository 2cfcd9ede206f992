"""``grounded-sam app``: prompt, click, correct and review labels in the browser (Gradio; extra ``[app]``).

- Image: captions -> masks, boxes, classes and scores over the image; click to select, + / -
  clicks and drawn boxes refine an object or add one on the cached image embedding; delete,
  relabel; export COCO JSON (RLE) and PNG masks. ``sam3``: exemplar boxes drawn on the image.
- Video: captions -> tracked objects (``sam2`` or ``sam3`` tracker); scrub; click on a frame
  to add or correct an object and re-propagate from there; download an H.264 MP4 and COCO.
- Review: open a ``label`` output folder; fix an image's instances; save through the
  labeling record store (a later ``label`` rerun keeps the reviewed records).

Modules: :mod:`~grounded_sam.app.models` (the shared models), :mod:`~grounded_sam.app.session`
(image editing state, no browser), :mod:`~grounded_sam.app.video_session`,
:mod:`~grounded_sam.app.review` (the dataset folder), the views (``*_view.py``, ``editor.py``)
and :mod:`~grounded_sam.app.server` (the page and how it is served).
"""

from grounded_sam.app.models import AppError, AppModels, ModelOptions
from grounded_sam.app.server import AppOptions, build_app, launch

__all__ = ["AppModels", "ModelOptions", "AppError", "AppOptions", "build_app", "launch"]
