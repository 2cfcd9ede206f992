"""``grounded-sam serve``: the pipeline as a server for other tools (today: Label Studio's ML backend).

Only typer and the CLI's option types load at import; Starlette, uvicorn and the models load when
the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from grounded_sam.cli.checks import one_of
from grounded_sam.cli.options import (
    MEMORY_POLICIES, BoxThr, CheckpointOpt, DetectorId, DetectorOpt, DeviceOpt, ImageSize, Multimask, NmsIou,
    OntologyFile, Preset, Prompt, SegmenterOpt, TextThr, build_pipeline,
)

serve_app = typer.Typer(
    name="serve", help="Serve the models to a labeling tool over HTTP.", no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]}, rich_markup_mode=None,
)


@serve_app.command("label-studio")
def label_studio(
    host: Annotated[str, typer.Option("--host", help="Address to serve on (default: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port.", min=1, max=65535)] = 9090,
    token: Annotated[Optional[str], typer.Option("--token", help="Require this token (Bearer, or basic auth's password) on every route but /health.", envvar="GROUNDED_SAM_SERVE_TOKEN")] = None,
    label_studio_url: Annotated[Optional[str], typer.Option("--label-studio-url", help="Label Studio's URL, to fetch task images from until a project's setup names it.")] = None,
    label_studio_token: Annotated[Optional[str], typer.Option("--label-studio-token", help="Label Studio token for fetching images: a personal access token (Label Studio 1.23's default) or a legacy one; used instead of the legacy token Label Studio sends at setup.", envvar="LABEL_STUDIO_API_KEY")] = None,
    local_root: Annotated[Optional[list[Path]], typer.Option("--local-root", help="A folder whose images tasks may name by path (repeatable).")] = None,
    cache_tasks: Annotated[int, typer.Option("--cache-tasks", min=1, help="Keep the image embeddings of this many tasks for the smart tools (SAM 2 at 1024 px: ~16 MB each).")] = 8,
    redetect_every: Annotated[Optional[int], typer.Option("--redetect-every", min=1, help="Video tasks: run the detector every N frames (new objects join the tracks).", show_default="15")] = None,
    memory: Annotated[Optional[str], typer.Option("--memory", help="Video tasks: memory policy per track (fifo | quality | samurai | distractor; as for track).", show_default="fifo", callback=one_of(MEMORY_POLICIES))] = None,
    prompt: Prompt = None, ontology: OntologyFile = None, config: Preset = None, detector: DetectorOpt = None,
    detector_model_id: DetectorId = None, segmenter: SegmenterOpt = None, checkpoint: CheckpointOpt = None,
    device: DeviceOpt = None, box_threshold: BoxThr = None, text_threshold: TextThr = None, nms_iou: NmsIou = None,
    multimask: Multimask = None, image_size: ImageSize = None,
) -> None:
    """Run a Label Studio ML backend (pre-annotation, smart tools).

    Each label's caption is its hint (or alias) in the labeling config, else the captions that
    --prompt / --ontology give a class of that name."""
    try:
        import uvicorn

        from grounded_sam.serve import BackendOptions, LabelStudioBackend, build_server
    except ImportError as e:
        typer.secho(f'error: the server needs Starlette and uvicorn: pip install ".[label-studio]" ({e})',
                    fg="red", err=True)
        raise typer.Exit(2) from None
    roots = tuple(local_root or ())
    for root in roots:
        if not root.is_dir():
            raise typer.BadParameter(f"not a folder: {str(root)!r}", param_hint="--local-root")
    given = bool(prompt or ontology or (config and _preset_has_ontology(config)))
    gs = build_pipeline(prompt if given else "object", ontology, config, detector=detector,
                        detector_model_id=detector_model_id, segmenter=segmenter, checkpoint=checkpoint, device=device,
                        box_threshold=box_threshold, text_threshold=text_threshold, nms_iou=nms_iou,
                        multimask=multimask, image_size=image_size)
    from grounded_sam import __version__

    version = f"grounded-sam-{__version__}-{gs.detector_name or 'detector'}"
    backend = LabelStudioBackend(gs, BackendOptions(model_version=version, local_roots=roots, hostname=label_studio_url,
                                                    access_token=label_studio_token, pipeline_captions=given,
                                                    cache_tasks=cache_tasks,
                                                    track_options={k: v for k, v in (("redetect_every", redetect_every),
                                                                   ("memory", memory)) if v is not None}))
    reach = "this machine only" if host in ("127.0.0.1", "localhost", "::1") else host
    typer.echo(f"Label Studio ML backend on http://{host}:{port} ({reach}{'; token required' if token else ''}); "
               "Ctrl+C stops it", err=True)
    uvicorn.run(build_server(backend, token=token), host=host, port=port, log_level="info")


def _preset_has_ontology(config: str) -> bool:
    from grounded_sam.pipeline.presets import load_preset

    try:
        return "ontology" in load_preset(config)
    except Exception:  # noqa: BLE001 (build_pipeline reports a bad preset)
        return True
