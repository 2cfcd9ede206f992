"""The image view: upload or pick an image, detect from captions, click to fix, export.

Uploading (or picking a sample) opens a new :class:`~grounded_sam.app.session.ImageSession`
(:func:`open_upload`): the upload component passes the file gradio stored, under the name the
browser sent, so the session keeps the user's file name (``street.jpg``) and the exports are
named after it (``street_coco.json``, whose ``file_name`` is ``street.jpg``). The pixels are
read by the project's one image loader (:func:`gsam_runtime.images.load_image`: EXIF orientation,
alpha over white), as ``grounded-sam`` reads them on the command line.
Detect runs the pipeline with the captions (and the exemplar boxes drawn for ``sam3``) and
replaces the objects; the shared editor (:mod:`grounded_sam.app.editor`) does the clicking;
Export writes COCO JSON (RLE) and a zip of PNG masks for download.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from grounded_sam.app.editing import export_coco, export_masks
from grounded_sam.app.editor import build_editor, editor_outputs, error_text, report_errors
from grounded_sam.app.models import AppError, AppModels, parse_captions
from grounded_sam.app.session import ImageSession

__all__ = ["build_image_view", "open_upload", "sample_images"]


def sample_images(folder: Path) -> list[str]:
    """Sample scenes (:mod:`grounded_sam.assets.samples`) written as PNGs into ``folder``, to pick from."""
    from PIL import Image

    from grounded_sam.assets.samples import SyntheticScene, shapes_image

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "shapes.png", folder / "scene.png"]
    Image.fromarray(shapes_image(240, 320)).save(paths[0])
    Image.fromarray(SyntheticScene((240, 320), objects=4, seed=1).frame(0)).save(paths[1])
    return [str(p) for p in paths]


def _classes(captions: str | None) -> list[str]:
    try:
        return list(dict.fromkeys(parse_captions(captions).values()))
    except AppError:
        return ["object"]


def open_upload(path: str | Path, captions: str | None = None) -> ImageSession:
    """A new session on the image file ``path``, named after the file (its base name).

    The classes come from ``captions`` (``["object"]`` until captions are given). Raises
    ``ValueError`` / ``OSError`` for a file that is no image.
    """
    from gsam_runtime.images import load_image

    name = Path(path).name
    return ImageSession(load_image(path, name=name), _classes(captions), name=name)


def build_image_view(models: AppModels, work_dir: Path) -> None:
    """The image tab's components and events (call inside a ``gr.Blocks`` context)."""
    with gr.Row():
        with gr.Column(scale=1):
            # a file path (the stored upload, under the browser's file name): the session keeps the name
            upload = gr.Image(label="Image", type="filepath", sources=["upload", "clipboard"], image_mode=None,
                              elem_id="image-upload")
            gr.Examples(sample_images(work_dir / "samples"), inputs=[upload], label="or pick a sample")
            captions = gr.Textbox(label="Captions", placeholder="a dog:dog, person", elem_id="image-captions")
            detect = gr.Button("Detect", variant="primary", elem_id="image-detect")
            with gr.Row():
                coco = gr.Button("Export COCO JSON", size="sm", elem_id="image-export-coco")
                masks = gr.Button("Export PNG masks", size="sm", elem_id="image-export-masks")
            download = gr.File(label="Download", interactive=False, elem_id="image-download")
        with gr.Column(scale=2):
            editor = build_editor(models, "image")

    @report_errors
    def on_detect(s: ImageSession | None, text: str | None) -> tuple[Any, ...]:
        if s is None:
            raise AppError("upload or pick an image first")
        captions_map = parse_captions(text)
        exemplars = s.exemplars if s.exemplars else None
        pipe, det = models.predict(captions_map, s.key, s.image, exemplars=exemplars)
        fresh = ImageSession.from_detections(s.image, det, pipe.classes, name=s.name, key=s.key)
        fresh.exemplars = {k: v for k, v in s.exemplars.items() if k in pipe.classes}
        return editor_outputs(fresh, f"{len(det)} object(s): " + ", ".join(
            f"{pipe.classes[int(c)]}" for c in (det.class_id if det.class_id is not None else [])))

    def exporter(write: Any) -> Any:
        def run(s: ImageSession | None) -> str | None:
            if s is None:
                raise gr.Error("upload an image first")
            return str(write(s, Path(tempfile.mkdtemp(dir=work_dir))))

        return run

    def on_change(path: str | None, text: str | None, s: ImageSession | None) -> tuple[Any, ...]:
        if not path:
            return editor_outputs(None, "")
        try:
            session = open_upload(path, text)
        except (ValueError, OSError) as e:
            return editor_outputs(None, error_text(e))
        if (s is not None and session.name == s.name and session.hw == s.hw
                and np.array_equal(session.image, s.image)):
            return editor_outputs(s, "")  # the same image (an upload fires change too)
        h, w = session.hw
        return editor_outputs(session, f"{session.name} ({w}x{h}): enter captions and press Detect")

    upload.change(on_change, [upload, captions, editor.session], editor.outputs)
    detect.click(on_detect, [editor.session, captions], editor.outputs)
    captions.submit(on_detect, [editor.session, captions], editor.outputs)
    coco.click(exporter(export_coco), [editor.session], download)
    masks.click(exporter(export_masks), [editor.session], download)
