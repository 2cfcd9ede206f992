"""The editing panel that the image and review views share: overlay, click modes, class, actions.

:func:`build_editor` lays out the components (element ids prefixed with the view's name, for
tests and styling) and wires the events that only edit the session held in a ``gr.State``:
clicks on the overlay, delete, relabel, deselect (the next + click or box starts a new object),
and clear clicks. :func:`editor_outputs` is what every handler returns to refresh the panel.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from grounded_sam.app.editing import CLICK_MODES, SELECT, apply_click
from grounded_sam.app.models import AppError, AppModels
from grounded_sam.app.render import render_session
from grounded_sam.app.session import ImageSession

__all__ = ["Editor", "build_editor", "editor_outputs", "report_errors", "error_text"]


@dataclass
class Editor:
    """The panel's components; ``outputs`` is the order :func:`editor_outputs` fills."""

    session: gr.State
    overlay: gr.Image
    mode: gr.Radio
    klass: gr.Dropdown
    status: gr.Markdown
    objects: gr.Textbox

    @property
    def outputs(self) -> list[Any]:
        return [self.session, self.overlay, self.status, self.objects, self.klass]


def editor_outputs(session: ImageSession | None, message: str) -> tuple[Any, ...]:
    """(session, overlay, status, objects JSON, class dropdown) for a handler to return."""
    if session is None:
        return None, None, message, "", gr.update()
    choices = [(name, i) for i, name in enumerate(session.classes)]
    return (session, render_session(session), message, json.dumps(session.summary(), indent=1),
            gr.update(choices=choices, value=session.current_class))


def error_text(e: Exception) -> str:
    """A status line for an error (the CLI's loading messages already start with ``error:``); ``<`` is
    escaped, so that the Markdown status shows ``--segmenter <config name>`` instead of dropping it as a tag."""
    text = str(e) if str(e).startswith("error:") else f"error: {e}"
    return text.replace("<", "&lt;")


def report_errors(fn: Callable[..., tuple[Any, ...]]) -> Callable[..., tuple[Any, ...]]:
    """Run a handler whose first argument is the session; a bad input or model error becomes the status line."""

    @functools.wraps(fn)  # gradio reads the wrapped signature (``evt: gr.SelectData``)
    def run(session: ImageSession | None, *args: Any) -> tuple[Any, ...]:
        try:
            return fn(session, *args)
        except (AppError, ValueError, OSError) as e:
            return editor_outputs(session, error_text(e))

    return run


def build_editor(models: AppModels, prefix: str) -> Editor:
    """Lay out and wire the panel (module docs); call inside a ``gr.Blocks`` context."""
    session = gr.State(None)
    overlay = gr.Image(label="Click to select / refine", type="numpy", interactive=False, format="png",
                       elem_id=f"{prefix}-overlay", buttons=["download", "fullscreen"])
    status = gr.Markdown(elem_id=f"{prefix}-status")
    with gr.Row():
        mode = gr.Radio(list(CLICK_MODES), value=SELECT, label="A click on the image will", elem_id=f"{prefix}-mode")
        klass = gr.Dropdown(choices=[], label="Class (new objects, relabel, exemplars)", elem_id=f"{prefix}-class")
    with gr.Row():
        deselect = gr.Button("New object", size="sm", elem_id=f"{prefix}-new")
        relabel = gr.Button("Relabel selected", size="sm", elem_id=f"{prefix}-relabel")
        clear = gr.Button("Clear clicks", size="sm", elem_id=f"{prefix}-clear")
        delete = gr.Button("Delete selected", size="sm", variant="stop", elem_id=f"{prefix}-delete")
    objects = gr.Textbox(label="Objects (state)", lines=6, max_lines=14, interactive=False, elem_id=f"{prefix}-objects")
    editor = Editor(session, overlay, mode, klass, status, objects)

    @report_errors
    def on_click(s: ImageSession | None, mode_value: str, class_value: Any, evt: gr.SelectData) -> tuple[Any, ...]:
        if s is None:
            raise AppError("open an image first")
        if class_value is not None:
            s.current_class = int(class_value)
        x, y = evt.index
        return editor_outputs(s, apply_click(models, s, mode_value, float(x), float(y)))

    @report_errors
    def on_delete(s: ImageSession | None) -> tuple[Any, ...]:
        if s is None:
            raise AppError("open an image first")
        s.delete_selected()
        return editor_outputs(s, "deleted")

    @report_errors
    def on_relabel(s: ImageSession | None, class_value: Any) -> tuple[Any, ...]:
        if s is None or class_value is None:
            raise AppError("select an object and a class")
        s.relabel_selected(int(class_value))
        return editor_outputs(s, f"relabelled as {s.classes[int(class_value)]}")

    @report_errors
    def on_deselect(s: ImageSession | None, class_value: Any) -> tuple[Any, ...]:
        if s is None:
            raise AppError("open an image first")
        s.selected, s.corner = None, None
        if class_value is not None:
            s.current_class = int(class_value)
        return editor_outputs(s, f"a + click or a box now starts a new {s.classes[s.current_class]}")

    @report_errors
    def on_clear(s: ImageSession | None) -> tuple[Any, ...]:
        if s is None:
            raise AppError("open an image first")
        s.clear_prompts()
        return editor_outputs(s, "clicks cleared")

    overlay.select(on_click, [session, mode, klass], editor.outputs)
    delete.click(on_delete, [session], editor.outputs)
    relabel.click(on_relabel, [session, klass], editor.outputs)
    deselect.click(on_deselect, [session, klass], editor.outputs)
    clear.click(on_clear, [session], editor.outputs)
    return editor
