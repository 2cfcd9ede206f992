"""The app as a whole: three tabs in one ``gr.Blocks``, and how it is served.

:func:`build_app` makes the page (image, video, review); :func:`launch` serves it on
``127.0.0.1`` by default, with no public share link unless ``share=True``, and refuses uploads
larger than ``max_upload_mb`` (the page says so). In Jupyter, ``build_app(...).launch()``
renders the page inline. Fonts are the system's: the page loads nothing from the internet.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from grounded_sam.app.image_view import build_image_view
from grounded_sam.app.models import AppModels, ModelOptions

if TYPE_CHECKING:
    from grounded_sam.app.review import ReviewFolder

__all__ = ["AppOptions", "build_app", "launch", "THEME"]

THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                          font_mono=["ui-monospace", "monospace"])  # no web fonts: works offline


@dataclass(frozen=True)
class AppOptions:
    """How the app is served (the ``grounded-sam app`` options)."""

    host: str = "127.0.0.1"
    port: int | None = None  # None: gradio picks a free one from 7860 up
    share: bool = False  # a public gradio.live link; off unless asked
    max_upload_mb: float = 200.0
    review: Path | None = None  # the label output folder the review tab may read and write

    def __post_init__(self) -> None:
        if not self.max_upload_mb > 0:
            raise ValueError(f"max_upload_mb must be > 0, got {self.max_upload_mb!r}")
        if self.port is not None and not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port!r}")


def build_app(models: AppModels | None = None, options: AppOptions | None = None,
              work_dir: Path | None = None, review: ReviewFolder | None = None) -> gr.Blocks:
    """The page (module docs). ``work_dir`` holds samples and downloads (default: a new temp folder);
    ``review``: ``options.review`` already opened. Under the title, whether the models can load
    (:meth:`AppModels.status`, checked now: no connection retries)."""
    from grounded_sam.app.review_view import build_review_view
    from grounded_sam.app.video_view import build_video_view

    models = models or AppModels(ModelOptions())
    options = options or AppOptions()
    work = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="grounded-sam-app-"))
    status = models.status()
    with gr.Blocks(title="grounded-sam", analytics_enabled=False) as demo:
        gr.Markdown("## grounded-sam: text-prompted segmentation you can click on\n"
                    f"Detector `{models.detector_name}`; uploads up to {options.max_upload_mb:g} MB.")
        gr.Markdown(status.text if status.ok else f"**The models cannot load:**\n```\n{status.text}\n```",
                    elem_id="model-status")
        with gr.Tab("Image", elem_id="tab-image"):
            build_image_view(models, work)
        with gr.Tab("Video", elem_id="tab-video"):
            build_video_view(models, work)
        with gr.Tab("Review", elem_id="tab-review"):
            build_review_view(models, review if review is not None else options.review)
    return demo


def launch(demo: gr.Blocks, options: AppOptions, block: bool = True, **kwargs: Any) -> Any:
    """Serve ``demo`` as ``options`` say; ``block=False`` returns at once (tests, notebooks)."""
    return demo.launch(
        server_name=options.host, server_port=options.port, share=options.share,
        max_file_size=int(options.max_upload_mb * 1024 * 1024), prevent_thread_lock=not block,
        theme=THEME, footer_links=[], quiet=not block, **kwargs,
    )
