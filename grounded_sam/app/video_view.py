"""The video view: upload, track from captions, scrub, click to add or correct, re-propagate, download.

Track runs the chosen tracker (``sam2``: detect every N frames + SAM 2 memory; ``sam3``: SAM 3's
concept tracker) into a :class:`~grounded_sam.app.video_session.VideoSession`. The slider picks
the frame shown; a click selects a track, or adds a + / - click or a box to the selected track
(or to a new track of the chosen class) on that frame; Propagate re-tracks it from there to the
end. Export writes the annotated H.264 MP4 and the per-frame COCO file.
"""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path
from typing import Any

import cv2
import gradio as gr
import numpy as np

from grounded_sam.export.annotate import annotate_image
from grounded_sam.app.editing import BACKGROUND, BOX, FOREGROUND, SELECT
from grounded_sam.app.editor import error_text
from grounded_sam.app.models import AppError, AppModels, parse_captions
from grounded_sam.app.video_session import VideoSession

__all__ = ["build_video_view", "render_frame"]

VIDEO_MODES = (SELECT, FOREGROUND, BACKGROUND, BOX)


def render_frame(session: VideoSession, t: int) -> np.ndarray:
    """Frame ``t`` annotated, the selected track outlined in white and its clicks marked."""
    canvas = annotate_image(session.frame(t), session.detections(t), session.classes)
    if session.selected is not None and (mask := session.mask(t, session.selected)) is not None:
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(canvas, contours, -1, (255, 255, 255), 2)
    if session.edit is not None and session.edit.frame == t:
        for (x, y), label in zip(session.edit.points, session.edit.labels):
            cv2.circle(canvas, (int(round(x)), int(round(y))), 4, (40, 220, 60) if label else (235, 40, 40), -1)
    return canvas


def build_video_view(models: AppModels, work_dir: Path) -> None:
    """The video tab (call inside a ``gr.Blocks`` context)."""
    session = gr.State(None)
    with gr.Row():
        with gr.Column(scale=1):
            video = gr.Video(label="Video", sources=["upload"], elem_id="video-upload")
            captions = gr.Textbox(label="Captions", placeholder="a dog:dog, person", elem_id="video-captions")
            tracker = gr.Radio(["sam2", "sam3"], value=models.default_tracker(), label="Tracker",
                               elem_id="video-tracker")
            run = gr.Button("Track", variant="primary", elem_id="video-track")
            export = gr.Button("Export MP4 + COCO", elem_id="video-export")
            download = gr.File(label="Download", file_count="multiple", interactive=False, elem_id="video-download")
        with gr.Column(scale=2):
            overlay = gr.Image(label="Frame: click to select / correct", type="numpy", interactive=False,
                               format="png", elem_id="video-overlay")
            frame = gr.Slider(0, 1, value=0, step=1, label="Frame", elem_id="video-frame")
            status = gr.Markdown(elem_id="video-status")
            with gr.Row():
                mode = gr.Radio(list(VIDEO_MODES), value=SELECT, label="A click on the frame will",
                                elem_id="video-mode")
                klass = gr.Dropdown(choices=[], label="Class (new objects, relabel)", elem_id="video-class")
            with gr.Row():
                new = gr.Button("New object", size="sm", elem_id="video-new")
                propagate = gr.Button("Propagate from this frame", variant="primary", size="sm",
                                      elem_id="video-propagate")
                relabel = gr.Button("Relabel selected", size="sm", elem_id="video-relabel")
                delete = gr.Button("Delete selected from this frame on", size="sm", variant="stop",
                                   elem_id="video-delete")
            state = gr.Textbox(label="Tracks (state)", lines=6, max_lines=14, interactive=False, elem_id="video-state")
    outputs = [session, overlay, status, state, klass, frame]

    def refresh(s: VideoSession | None, t: int, message: str) -> tuple[Any, ...]:
        if s is None:
            return None, None, message, "", gr.update(), gr.update()
        t = int(min(max(t, 0), s.num_frames - 1))
        return (s, render_frame(s, t), message, json.dumps(s.summary(t), indent=1),
                gr.update(choices=[(c, i) for i, c in enumerate(s.classes)], value=s.current_class),
                gr.update(maximum=max(s.num_frames - 1, 1), value=t))

    def guarded(fn: Any) -> Any:
        @functools.wraps(fn)  # gradio reads the wrapped signature (``evt: gr.SelectData``)
        def run_(s: VideoSession | None, t: Any, *args: Any) -> tuple[Any, ...]:
            try:
                return fn(s, int(t or 0), *args)
            except (AppError, ValueError, OSError, RuntimeError) as e:
                return refresh(s, int(t or 0), error_text(e))

        return run_

    @guarded
    def on_track(_: VideoSession | None, t: int, path: str | None, text: str | None, kind: str) -> tuple[Any, ...]:
        if not path:
            raise AppError("upload a video first")
        pipe = models.pipeline(parse_captions(text))
        s = VideoSession(path, pipe.classes)
        options: dict[str, Any] = {}
        if kind == "sam3" and models.detector_name == "sam3":
            options["model_id"] = getattr(pipe.detector, "model_id", None) or models.options.detector_model_id
        with models.lock:
            frames = s.run_tracker(pipe.make_tracker(kind, **{k: v for k, v in options.items() if v}).frames(path))
        return refresh(s, 0, f"{frames} frames, {len(s.tracks)} track(s)")

    def need(s: VideoSession | None) -> VideoSession:
        if s is None:
            raise AppError("track a video first")
        return s

    @guarded
    def on_click(s: VideoSession | None, t: int, mode_value: str, class_value: Any,
                 evt: gr.SelectData) -> tuple[Any, ...]:
        s = need(s)
        if class_value is not None:
            s.current_class = int(class_value)
        x, y = (float(v) for v in evt.index)
        if mode_value == SELECT:
            tid = s.select_at(t, x, y)
            return refresh(s, t, "nothing here" if tid is None else f"selected track #{tid}")
        with models.lock:
            predictor = models.video_predictor()
            if mode_value == BOX:
                if s.corner is None:
                    s.corner = (x, y)
                    return refresh(s, t, "first corner set: click the opposite corner")
                (x0, y0), s.corner = s.corner, None
                mask = s.box(predictor, t, np.array([min(x0, x), min(y0, y), max(x0, x), max(y0, y)]))
            else:
                mask = s.click(predictor, t, x, y, positive=mode_value == FOREGROUND)
        return refresh(s, t, f"track #{s.selected} on frame {t}: {int(mask.sum())} px; press Propagate")

    @guarded
    def on_propagate(s: VideoSession | None, t: int) -> tuple[Any, ...]:
        with models.lock:
            first, count = need(s).propagate()
        return refresh(s, t, f"track #{s.selected} re-tracked from frame {first}: {count} frames")

    @guarded
    def on_new(s: VideoSession | None, t: int, class_value: Any) -> tuple[Any, ...]:
        s = need(s)
        s.selected, s.corner = None, None
        if class_value is not None:
            s.current_class = int(class_value)
        return refresh(s, t, f"a + click or a box now starts a new {s.classes[s.current_class]}")

    @guarded
    def on_relabel(s: VideoSession | None, t: int, class_value: Any) -> tuple[Any, ...]:
        need(s).relabel_selected(int(class_value))
        return refresh(s, t, "relabelled")

    @guarded
    def on_delete(s: VideoSession | None, t: int) -> tuple[Any, ...]:
        removed = need(s).delete_selected(from_frame=t)
        return refresh(s, t, f"deleted from frame {t} on ({removed} frames)")

    def on_export(s: VideoSession | None) -> list[str]:
        if s is None:
            raise gr.Error("track a video first")
        return [str(p) for p in s.export(Path(tempfile.mkdtemp(dir=work_dir)))]

    run.click(on_track, [session, frame, video, captions, tracker], outputs)
    overlay.select(on_click, [session, frame, mode, klass], outputs)
    frame.release(guarded(lambda s, t: refresh(need(s), t, f"frame {t}")), [session, frame], outputs)
    frame.input(guarded(lambda s, t: refresh(need(s), t, f"frame {t}")), [session, frame], outputs)
    propagate.click(on_propagate, [session, frame], outputs)
    new.click(on_new, [session, frame, klass], outputs)
    relabel.click(on_relabel, [session, frame, klass], outputs)
    delete.click(on_delete, [session, frame], outputs)
    export.click(on_export, [session], download)
