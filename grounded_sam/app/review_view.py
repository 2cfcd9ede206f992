"""The review view: browse a ``label`` output folder, fix an image's instances, save.

The folder is the one ``grounded-sam app --review FOLDER`` was started with; the page cannot
name another. Picking an image opens its record in the shared editor
(:mod:`grounded_sam.app.editor`: click-refine, relabel, delete, add); Save writes it through the
job's record store and rewrites the dataset (:class:`~grounded_sam.app.review.ReviewFolder`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from grounded_sam.app.editor import build_editor, editor_outputs, error_text, report_errors
from grounded_sam.app.models import AppError, AppModels
from grounded_sam.app.review import ReviewError, ReviewFolder
from grounded_sam.app.session import ImageSession

__all__ = ["build_review_view"]


def _choices(folder: ReviewFolder) -> list[tuple[str, str]]:
    return [(f"{rel}  (reviewed)" if folder.is_reviewed(rel) else rel, rel) for rel in folder.names]


def build_review_view(models: AppModels, folder_path: Path | ReviewFolder | None) -> None:
    """The review tab (call inside a ``gr.Blocks`` context); ``folder_path`` may be opened already."""
    if folder_path is None:
        gr.Markdown("Start the app with `--review FOLDER` (an output folder of `grounded-sam label`) "
                    "to review and fix its labels here.", elem_id="review-status")
        return
    try:
        folder = folder_path if isinstance(folder_path, ReviewFolder) else ReviewFolder(folder_path)
    except (ReviewError, OSError) as e:
        gr.Markdown(error_text(e), elem_id="review-status")
        return
    gr.Markdown(f"Reviewing `{folder.root}`: {len(folder.names)} images, {folder.format} dataset, "
                f"classes {', '.join(folder.classes)}.")
    metrics = gr.Markdown(folder.metrics_text(), elem_id="review-metrics")
    with gr.Row():
        with gr.Column(scale=1):
            picker = gr.Dropdown(choices=_choices(folder), value=None, label="Image", elem_id="review-image")
            save = gr.Button("Save (marks the image reviewed)", variant="primary", elem_id="review-save")
        with gr.Column(scale=2):
            editor = build_editor(models, "review")

    @report_errors
    def on_pick(_: ImageSession | None, rel: str | None) -> tuple[Any, ...]:
        if not rel:
            return editor_outputs(None, "")
        image, record = folder.load(rel)
        session = ImageSession.from_detections(image, folder.detections(rel), folder.classes, name=rel)
        mark = " (reviewed)" if folder.is_reviewed(rel) else ""
        return editor_outputs(session, f"{rel}{mark}: {len(record['instances'])} instance(s)")

    def on_save(s: ImageSession | None) -> tuple[Any, ...]:
        try:
            if s is None:
                raise AppError("pick an image first")
            report = folder.save(s.name, s.to_detections())
        except (AppError, ValueError, OSError) as e:
            return (*editor_outputs(s, error_text(e)), gr.update(), gr.update())
        message = (f"saved {s.name}: {len(s.to_detections())} instance(s); dataset rewritten "
                   f"({report.instances_written} instances in {report.images_written} images)")
        return (*editor_outputs(s, message), gr.update(choices=_choices(folder), value=s.name),
                folder.metrics_text())

    picker.change(on_pick, [editor.session, picker], editor.outputs)
    save.click(on_save, [editor.session], [*editor.outputs, picker, metrics])
