"""The ``grounded-sam`` command: a thin layer over the Python API.

Only typer and the torch-free registries (detector names, segmenter configs, presets) are imported
at module level: torch, transformers and supervision load inside the commands that need them, so
``grounded-sam --help`` answers fast. Every command checks its inputs, and that the models it
needs are cached or downloadable (:mod:`grounded_sam.pipeline.hub`), before any model loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NamedTuple, Optional

import typer

from grounded_sam.cli.checks import (
    check_label_folder, check_tracker_options, input_files, one_of, output_folder, print_models, run_download,
    sample_prompt,
)
from grounded_sam.cli.device import check_torch_device
from grounded_sam.cli.options import (
    LABEL_FORMATS, MEMORY_POLICIES, AutoSegmenterOpt, BoxThr, CheckpointOpt, DetectorId, DetectorOpt, DeviceOpt,
    ExemplarsOpt, ImageSize, MaxPixelsOpt, Multimask, NmsIou, OntologyFile, Preset, Prompt, SampleOpt, SamplePrompt, SegmenterOpt,
    TextThr, ThresholdsOpt, TileOpt, TileOverlapOpt, WindowMasksOpt, build_pipeline, fail_loading,
)
from grounded_sam.cli.export import export_command
from grounded_sam.cli.quality import eval_command, tune_command
from grounded_sam.cli.serve import serve_app
from grounded_sam.pipeline.configs import list_pipeline_configs
from grounded_sam.pipeline.defaults import DEFAULT_SEGMENTER
from grounded_sam.tracking.factory import TRACKERS

app = typer.Typer(
    name="grounded-sam",
    help="Text-prompted segmentation and tracking: zero-shot detectors + SAM 2 / SAM 2.1 / SAM 1. "
    "First run: `grounded-sam segment --sample` (needs the default models: `grounded-sam download`).",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},  # every command takes -h too
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: flags render as flags, [brackets] in help text stay as written
)

class ExemplarFile(NamedTuple):
    """An ``--exemplars`` file: ``(exemplars, negative_exemplars)`` for every image, and per image name."""

    default: tuple[Any, Any]
    images: dict[str, tuple[Any, Any]]

    def for_image(self, name: str) -> tuple[Any, Any]:
        return self.images.get(name, self.default)


def read_exemplars(path: Path) -> ExemplarFile:
    """Read an ``--exemplars`` file, checked before any model loads. Box values are checked by the
    detector against each image."""
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise typer.BadParameter(f"file not found: {str(path)!r}", param_hint="--exemplars") from None
    except (OSError, ValueError) as e:
        raise typer.BadParameter(f"{str(path)!r} is not valid JSON: {e}", param_hint="--exemplars") from None

    def section(value: Any, where: str) -> tuple[Any, Any]:
        if not isinstance(value, dict):
            raise typer.BadParameter(f"{where} must be a JSON object", param_hint="--exemplars")
        if not {"exemplars", "negative_exemplars"} & set(value):
            return value or None, None  # the short form: {class: boxes}
        for key in ("exemplars", "negative_exemplars"):
            if not isinstance(value.get(key) or {}, dict):
                raise typer.BadParameter(f"{where}[{key!r}] must map class names to boxes", param_hint="--exemplars")
        return value.get("exemplars") or None, value.get("negative_exemplars") or None

    if not isinstance(data, dict):
        raise typer.BadParameter(f"{str(path)!r} must hold a JSON object", param_hint="--exemplars")
    per_image = data.get("images") or {}
    if not isinstance(per_image, dict):
        raise typer.BadParameter(f"{str(path)!r}: 'images' must map file names to prompts", param_hint="--exemplars")
    default = section({k: v for k, v in data.items() if k != "images"}, str(path))
    return ExemplarFile(default, {name: section(v, f"images[{name!r}]") for name, v in per_image.items()})


def _progress(total: int | None, description: str) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=False)
    return progress, progress.add_task(description, total=total)


def _report_failures(failed: dict[str, str]) -> None:
    if failed:
        typer.secho(f"{len(failed)} input(s) failed:", fg="red", err=True)
        for name, why in failed.items():
            typer.secho(f"  {name}: {why}", err=True)
        raise typer.Exit(1)


# ---------------------------------------------------------------------------- commands
def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"grounded-sam {_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the installed version and exit.",
                                          callback=_print_version, is_eager=True)] = False,
) -> None:
    """Text-prompted segmentation and tracking: zero-shot detectors + SAM 2 / SAM 2.1 / SAM 1."""


@app.command()
def version() -> None:
    """Print the installed grounded-sam version."""
    typer.echo(f"grounded-sam {_version()}")


@app.command("models")
def models() -> None:
    """List the models: hub ids, licences, what is cached here.

    Detectors and segmenters, the default of each marked, and the bundled presets."""
    print_models()


@app.command()
def download(
    preset: Annotated[str, typer.Option("--preset", help=f"Fetch what this preset needs ({', '.join(list_pipeline_configs())}).")] = "default",
    detector: DetectorOpt = None, detector_model_id: DetectorId = None, segmenter: SegmenterOpt = None,
    checkpoint: CheckpointOpt = None,
) -> None:
    """Fetch the models a preset needs into the Hugging Face cache.

    The model options override the preset's."""
    run_download(preset, dict(detector=detector, detector_model_id=detector_model_id, segmenter=segmenter,
                              checkpoint=checkpoint))


@app.command()
def segment(
    images: Annotated[Optional[list[Path]], typer.Argument(help="Image files or folders.", show_default="the bundled sample")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for annotated images and JSON.")] = Path("grounded_sam_out"),
    prompt: SamplePrompt = None, ontology: OntologyFile = None, config: Preset = None, thresholds: ThresholdsOpt = None,
    detector: DetectorOpt = None, detector_model_id: DetectorId = None, segmenter: SegmenterOpt = None,
    checkpoint: CheckpointOpt = None, device: DeviceOpt = None, box_threshold: BoxThr = None,
    text_threshold: TextThr = None, nms_iou: NmsIou = None, multimask: Multimask = None, image_size: ImageSize = None,
    exemplars: ExemplarsOpt = None, sample: SampleOpt = False, tile: TileOpt = None, tile_overlap: TileOverlapOpt = None,
    max_pixels: MaxPixelsOpt = None, window_masks: WindowMasksOpt = None,
) -> None:
    """Segment images from text into annotated images and JSON.

    One JSON per image (COCO-RLE masks; "xyxy" the detector's box, "bbox" the mask's box
    [x, y, width, height])."""

    prompts = read_exemplars(exemplars) if exemplars is not None else ExemplarFile((None, None), {})
    files = input_files(images, sample)
    prompt = sample_prompt(prompt, ontology, config, sample or not images)
    gs = build_pipeline(prompt, ontology, config, thresholds, detector=detector, detector_model_id=detector_model_id,
                   segmenter=segmenter, checkpoint=checkpoint, device=device, box_threshold=box_threshold,
                   text_threshold=text_threshold, nms_iou=nms_iou, multimask=multimask, image_size=image_size,
                   tile=tile, tile_overlap=tile_overlap, windows=window_masks)
    from PIL import Image

    from grounded_sam.export.annotate import annotate_image
    from grounded_sam.export.records import detections_to_record, dumps
    from grounded_sam.export.safe_io import atomic_write_text, safe_output_path
    from gsam_runtime.images import load_image

    failed: dict[str, str] = {}
    progress, task = _progress(len(files), "segment")
    with output_folder(out), progress:  # the folder goes again when every image failed
        for path in files:
            try:
                image = load_image(path)
                positive, negative = prompts.for_image(path.name)
                det = gs.predict(image, exemplars=positive, negative_exemplars=negative)
                stem = path.stem
                Image.fromarray(annotate_image(image, det, gs.classes)).save(safe_output_path(out, f"{stem}_annotated.jpg"), quality=92)
                record = detections_to_record(det, path.name, image.shape[1], image.shape[0], gs.classes)
                atomic_write_text(safe_output_path(out, f"{stem}.json"), dumps(record))
            except Exception as e:  # noqa: BLE001 (reported per input; the job goes on)
                failed[str(path)] = f"{type(e).__name__}: {e}"
            progress.advance(task)
    typer.echo(f"{len(files) - len(failed)}/{len(files)} images segmented -> {out}")
    _report_failures(failed)


@app.command()
def label(
    folder: Annotated[str, typer.Argument(help="Folder of images to label (with --backend ray also a pyarrow URI: s3://...).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Dataset output folder.")],
    fmt: Annotated[str, typer.Option("--format", help=" | ".join(LABEL_FORMATS), callback=one_of(LABEL_FORMATS))] = "coco",
    extension: Annotated[Optional[str], typer.Option("--extension", help="Extension(s), comma-separated (default: every image type, as for segment; with --videos: every video type).")] = None,
    recursive: Annotated[bool, typer.Option("--recursive/--no-recursive", help="Also label images in subfolders.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per model call.")] = 1,
    overwrite: Annotated[bool, typer.Option("--overwrite/--no-overwrite", help="Relabel the folder, with other settings too (without it, a rerun whose settings differ is refused and changes nothing); images reviewed in the app are kept.")] = False,
    discard_reviewed: Annotated[bool, typer.Option("--discard-reviewed", help="With --overwrite: relabel the images reviewed in the app too (their fixes are lost).")] = False,
    backend: Annotated[str, typer.Option("--backend", help="local | ray (a pool of Ray workers, one pipeline each; a lost worker's images are re-run elsewhere).")] = "local",
    address: Annotated[Optional[str], typer.Option("--address", help="Ray cluster to join (auto = the running one); default: RAY_ADDRESS or a new local Ray.")] = None,
    workers: Annotated[int, typer.Option("--workers", help="Ray workers.")] = 1,
    num_gpus_per_worker: Annotated[float, typer.Option("--num-gpus-per-worker", help="GPUs per Ray worker (0: CPU workers).")] = 0.0,
    cpus_per_worker: Annotated[Optional[float], typer.Option("--cpus-per-worker", help="CPUs per Ray worker (default 1; fractions allowed).")] = None,
    prompt: Prompt = None, ontology: OntologyFile = None, config: Preset = None, thresholds: ThresholdsOpt = None,
    detector: DetectorOpt = None, detector_model_id: DetectorId = None, segmenter: SegmenterOpt = None,
    checkpoint: CheckpointOpt = None, device: DeviceOpt = None, box_threshold: BoxThr = None,
    text_threshold: TextThr = None, nms_iou: NmsIou = None, multimask: Multimask = None, image_size: ImageSize = None,
    exemplars: ExemplarsOpt = None, tile: TileOpt = None, tile_overlap: TileOverlapOpt = None, max_pixels: MaxPixelsOpt = None,
    window_masks: WindowMasksOpt = None,
    videos: Annotated[bool, typer.Option("--videos", help="FOLDER holds videos: track each (one task per video with --backend ray) into videos/<name>.json (video COCO with track_id) + index.json.")] = False,
    tracker: Annotated[str, typer.Option("--tracker", help=f"With --videos: {' | '.join(TRACKERS)} (as for track).", callback=one_of(TRACKERS))] = "auto",
    redetect_every: Annotated[Optional[int], typer.Option("--redetect-every", help="With --videos, sam2 tracker: run the detector every N frames (default 15).", min=1)] = None,
    memory: Annotated[Optional[str], typer.Option("--memory", help=f"With --videos, sam2 tracker: memory policy per track ({' | '.join(MEMORY_POLICIES)}, as for track).", show_default="fifo", callback=one_of(MEMORY_POLICIES))] = None,
) -> None:
    """Auto-label a folder into a COCO / YOLO-seg / JSONL dataset. Rerun the same command to resume.

    "bbox" (COCO, JSONL) is the mask's box [x, y, width, height]; JSONL also keeps the detector's box as
    "xyxy" [x1, y1, x2, y2] (COCO has no field for it)."""
    if backend not in ("local", "ray"):
        raise typer.BadParameter(f"expected local or ray, got {backend!r}", param_hint="--backend")
    if discard_reviewed and not overwrite:
        raise typer.BadParameter("relabels reviewed images as part of an --overwrite; give --overwrite too",
                                 param_hint="--discard-reviewed")
    if memory is not None and not videos:
        raise typer.BadParameter("applies to video labeling (--videos)", param_hint="--memory")
    if tile is not None and videos:
        raise typer.BadParameter("tiled detection applies to images; video labeling does not tile yet", param_hint="--tile")
    if window_masks is not None and videos:
        raise typer.BadParameter("applies to images; video labeling segments whole frames", param_hint="--window-masks")
    if "://" not in folder and not Path(folder).is_dir():
        what = "is not a folder" if Path(folder).exists() else "not found"
        raise typer.BadParameter(f"{what}: {folder!r}", param_hint="folder")
    if videos:
        check_tracker_options(tracker, detector, memory, redetect_every)
    exts = check_label_folder(folder, extension, recursive, out, videos)
    prompts = read_exemplars(exemplars) if exemplars is not None else None
    ray_opts: dict[str, Any] = {}
    if backend == "ray":  # this process only lists, checks and assembles: its models stay on the CPU
        if device is not None:
            raise typer.BadParameter("Ray workers run on CUDA with --num-gpus-per-worker > 0, else on CPU", param_hint="--device")
        device = "cpu"
        ray_opts = dict(backend="ray", ray_address=address, num_workers=workers,
                        num_gpus_per_worker=num_gpus_per_worker, num_cpus_per_worker=cpus_per_worker)
    gs = build_pipeline(prompt, ontology, config, thresholds, detector=detector, detector_model_id=detector_model_id,
                   segmenter=segmenter, checkpoint=checkpoint, device=device, box_threshold=box_threshold,
                   text_threshold=text_threshold, nms_iou=nms_iou, multimask=multimask, image_size=image_size,
                   tile=tile, tile_overlap=tile_overlap, windows=window_masks)
    video_opts = dict(videos=True, tracker=tracker, redetect_every=redetect_every, memory=memory) if videos else {}
    visual: dict[str, Any] = {}
    if prompts is not None:  # image names in the file are paths relative to the folder
        visual = dict(exemplars=prompts.default[0], negative_exemplars=prompts.default[1],
                      image_exemplars={name: {"exemplars": pos, "negative_exemplars": neg}
                                       for name, (pos, neg) in prompts.images.items()})
    try:
        report = gs.label(folder, extension=exts, output_folder=out, format=fmt, recursive=recursive,
                          batch_size=batch_size, overwrite=overwrite, discard_reviewed=discard_reviewed, **ray_opts,
                          **visual, **video_opts)
    except (FileNotFoundError, NotADirectoryError, ImportError, ValueError) as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(report.summary())
    _report_failures(dict(report.failed))


@app.command()
def track(
    video: Annotated[Optional[str], typer.Argument(help="Video file or folder of frames.", show_default="the bundled sample clip")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (annotated MP4 + per-frame JSONL + COCO).")] = Path("grounded_sam_track"),
    redetect_every: Annotated[Optional[int], typer.Option("--redetect-every", help="sam2 tracker: run the detector every N frames (default 15).", min=1)] = None,
    tracker: Annotated[str, typer.Option("--tracker", help="auto | sam2 | sam3 (auto: sam3's concept tracker for --detector sam3, else detect + SAM 2 memory).", callback=one_of(TRACKERS))] = "auto",
    memory: Annotated[Optional[str], typer.Option("--memory", help="sam2 tracker: memory policy per track: fifo (SAM 2's) | quality (memory only from good frames) | samurai (+ motion cue vs look-alikes) | distractor (DAM4SAM-style distractor memory).", show_default="fifo", callback=one_of(MEMORY_POLICIES))] = None,
    sample: SampleOpt = False,
    prompt: SamplePrompt = None, ontology: OntologyFile = None, config: Preset = None, thresholds: ThresholdsOpt = None,
    detector: DetectorOpt = None, detector_model_id: DetectorId = None, segmenter: SegmenterOpt = None,
    checkpoint: CheckpointOpt = None, device: DeviceOpt = None, box_threshold: BoxThr = None,
    text_threshold: TextThr = None, nms_iou: NmsIou = None, image_size: ImageSize = None,
) -> None:
    """Track text-prompted objects through a video."""
    from grounded_sam.assets import sample_video

    check_tracker_options(tracker, detector, memory, redetect_every)
    sampled = sample or video is None
    if sampled:
        if video is not None:
            raise typer.BadParameter("give a video or --sample, not both", param_hint="--sample")
        video = str(sample_video())
        typer.echo(f"no input given: tracking in the bundled sample {video}", err=True)
    elif "://" not in video and not Path(video).exists():
        raise typer.BadParameter(f"file not found: {video!r}", param_hint="video")
    prompt = sample_prompt(prompt, ontology, config, sampled)

    gs = build_pipeline(prompt, ontology, config, thresholds, detector=detector, detector_model_id=detector_model_id,
                   segmenter=segmenter, checkpoint=checkpoint, device=device, box_threshold=box_threshold,
                   text_threshold=text_threshold, nms_iou=nms_iou, multimask=None, image_size=image_size)
    from grounded_sam.tracking.outputs import write_tracking_outputs

    try:
        options = {} if memory is None else {"memory": memory}
        summary = write_tracking_outputs(gs, video, out, redetect_every=redetect_every, tracker=tracker, progress=True,
                                         **options)
    except (FileNotFoundError, ValueError) as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(1) from None
    typer.echo(summary)


@app.command()
def auto(
    images: Annotated[Optional[list[Path]], typer.Argument(help="Image files or folders.", show_default="the bundled sample")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for annotated images and JSON.")] = Path("grounded_sam_auto"),
    segmenter: AutoSegmenterOpt = None, checkpoint: CheckpointOpt = None, device: DeviceOpt = None,
    image_size: ImageSize = None,
    points_per_side: Annotated[int, typer.Option("--points-per-side", help="Prompt points along each side of the image (the grid has this squared).")] = 32,
    pred_iou_thresh: Annotated[float, typer.Option("--pred-iou-thresh", help="Keep masks whose predicted IoU is at least this.")] = 0.8,
    stability_score_thresh: Annotated[float, typer.Option("--stability-score-thresh", help="Keep masks whose stability score is at least this.")] = 0.95,
    min_mask_region_area: Annotated[int, typer.Option("--min-mask-region-area", help="Remove holes and islands smaller than this many pixels (0: off).")] = 0,
    sample: SampleOpt = False, max_pixels: MaxPixelsOpt = None,
) -> None:
    """Automatic masks without text, as annotated images and JSON.

    SAM's point-grid mask generator; COCO-RLE masks in one JSON per image."""
    files = input_files(images, sample)
    segmenter = segmenter or DEFAULT_SEGMENTER
    try:
        from grounded_sam.pipeline.hub import ModelsUnavailableError, check_models, models_needed

        check_models(models_needed(detector=None, segmenter=segmenter, checkpoint=checkpoint))
    except (ModelsUnavailableError, FileNotFoundError, ValueError) as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2) from None
    check_torch_device(device)
    from grounded_sam.cli.auto import run_auto

    with output_folder(out):  # the folder goes again when every image failed
        failed = run_auto(files, out, segmenter=segmenter, checkpoint=checkpoint, device=device, image_size=image_size,
                          points_per_side=points_per_side, pred_iou_thresh=pred_iou_thresh,
                          stability_score_thresh=stability_score_thresh, min_mask_region_area=min_mask_region_area,
                          on_load_error=fail_loading)
    _report_failures(failed)


app.command("eval")(eval_command)
app.command("tune")(tune_command)
app.command("export")(export_command)
app.add_typer(serve_app)


@app.command("app")
def app_command(
    host: Annotated[str, typer.Option("--host", help="Address to serve on (default: this machine only).")] = "127.0.0.1",
    port: Annotated[Optional[int], typer.Option("--port", help="Port (default: the first free one from 7860).")] = None,
    share: Annotated[bool, typer.Option("--share", help="Also open a public gradio.live link (off unless asked).")] = False,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", help="Refuse uploads larger than this (MB).")] = 200.0,
    review: Annotated[Optional[Path], typer.Option("--review", help="An output folder of `label` to review and fix.")] = None,
    config: Preset = None, detector: DetectorOpt = None, detector_model_id: DetectorId = None,
    segmenter: SegmenterOpt = None, checkpoint: CheckpointOpt = None, device: DeviceOpt = None,
    box_threshold: BoxThr = None, text_threshold: TextThr = None, nms_iou: NmsIou = None, multimask: Multimask = None,
    image_size: ImageSize = None, max_pixels: MaxPixelsOpt = None, tile: TileOpt = None,
    tile_overlap: TileOverlapOpt = None,
) -> None:
    """Open the browser app: prompt, click, correct, review.

    It needs Gradio: pip install ".[app]" in the project folder."""
    if tile_overlap is not None and tile is None:
        raise typer.BadParameter("applies to tiled detection; give --tile too", param_hint="--tile-overlap")
    if review is not None and not review.is_dir():  # answered before Gradio and torch load
        typer.secho(f"error: --review {review}: no such folder (give an output folder of `grounded-sam label`)",
                    fg="red", err=True)
        raise typer.Exit(2)
    try:
        from grounded_sam.app import AppModels, AppOptions, ModelOptions, build_app, launch
        from grounded_sam.app.review import ReviewError, ReviewFolder
    except ImportError as e:
        typer.secho(f'error: the app needs Gradio: pip install ".[app]" in the project folder ({e})', fg="red", err=True)
        raise typer.Exit(2) from None
    try:
        options = AppOptions(host=host, port=port, share=share, max_upload_mb=max_upload_mb, review=review)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    try:
        folder = None if review is None else ReviewFolder(review)
    except (ReviewError, OSError) as e:
        typer.secho(f"error: --review {review}: {e}", fg="red", err=True)
        raise typer.Exit(2) from None
    models = AppModels(ModelOptions(
        config=config, detector=detector, detector_model_id=detector_model_id, segmenter=segmenter,
        checkpoint=checkpoint, device=device, box_threshold=box_threshold, text_threshold=text_threshold,
        nms_iou=nms_iou, multimask=multimask, image_size=image_size, tile=tile, tile_overlap=tile_overlap))
    status = models.status()  # the fast check: the terminal and the page say it before anyone clicks
    typer.secho(status.text if status.ok else status.text + "\n(the app starts anyway; Detect answers with this "
                "message until the models are here)", fg=None if status.ok else "yellow", err=True)
    demo = build_app(models, options, review=folder)
    _, local_url, share_url = launch(demo, options, block=False)  # quiet: gradio's advice names launch() arguments
    reach = (f"public link: {share_url}" if share_url else "no public link could be made" if share
             else "this machine only; --share for a public link" if host in ("127.0.0.1", "localhost") else host)
    typer.echo(f"grounded-sam app on {local_url} ({reach}); Ctrl+C stops it")
    demo.block_thread()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version as dist_version

    try:
        return dist_version("grounded-sam")
    except PackageNotFoundError:  # running from a source tree that is not installed
        from grounded_sam import __version__

        return __version__


def main() -> None:
    app()
