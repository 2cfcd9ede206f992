"""Options shared by the commands that build a pipeline, and building it (:func:`build_pipeline`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from detectors import DEFAULT_MODEL_IDS, available_detectors
from grounded_sam.assets import SAMPLE_PROMPT
from grounded_sam.cli.checks import check_models_or_exit, read_ontology, yaml_problem
from grounded_sam.cli.device import DEVICES, check_torch_device, device_option
from grounded_sam.pipeline.configs import list_pipeline_configs
from grounded_sam.pipeline.defaults import DEFAULT_DETECTOR, DEFAULT_NMS_IOU, DEFAULT_SEGMENTER
from grounded_sam.pipeline.prompts import parse_prompt
from segmenter.config import load_model_config

__all__ = ["Prompt", "SamplePrompt", "OntologyFile", "Preset", "DetectorOpt", "DetectorId", "SegmenterOpt",
           "AutoSegmenterOpt", "CheckpointOpt", "DeviceOpt", "BoxThr", "TextThr", "NmsIou", "Multimask", "SampleOpt",
           "ExemplarsOpt", "ImageSize", "ThresholdsOpt", "TileOpt", "TileOverlapOpt", "WindowMasksOpt", "MEMORY_POLICIES",
           "LABEL_FORMATS", "build_pipeline", "fail_loading"]

# Names the CLI checks before any model loads. Their registries import torch (segmenter.video.policies)
# or supervision (grounded_sam.labeling), so the CLI keeps copies; tests/test_cli_inputs.py compares them.
MEMORY_POLICIES = ("fifo", "quality", "samurai", "distractor")
LABEL_FORMATS = ("coco", "yolo", "jsonl")

_DEFAULT_SEGMENTER_CONFIG = load_model_config(DEFAULT_SEGMENTER)
_DEFAULT_DETECTOR_ID = DEFAULT_MODEL_IDS[DEFAULT_DETECTOR]

# ---------------------------------------------------------------------------- shared options
_PROMPT_HELP = 'What to find: "a dog:dog, puppy:dog, person" (caption[:class], comma-separated).'
Prompt = Annotated[Optional[str], typer.Option("--prompt", "-p", help=_PROMPT_HELP, show_default="none")]
SamplePrompt = Annotated[Optional[str], typer.Option(  # for the commands with --sample
    "--prompt", "-p", help=_PROMPT_HELP, show_default=f"none; with --sample: {SAMPLE_PROMPT!r}")]
OntologyFile = Annotated[Optional[Path], typer.Option("--ontology", help="Ontology YAML (plain {caption: class} or the rich form), instead of --prompt.")]
Preset = Annotated[Optional[str], typer.Option(
    "--config", help=f"Pipeline preset: a YAML path or a bundled name ({', '.join(list_pipeline_configs())}); "
    "the model options below override it.", show_default="none: the defaults shown here")]
DetectorOpt = Annotated[Optional[str], typer.Option(
    "--detector", help=f"Detector family ({' | '.join(available_detectors())}), or a local save_pretrained folder "
    "(its family is read from its config.json).", show_default=f"{DEFAULT_DETECTOR} with {_DEFAULT_DETECTOR_ID}")]
DetectorId = Annotated[Optional[str], typer.Option(
    "--detector-model-id", help="Hub id of another checkpoint of the --detector family (a local folder goes to --detector).",
    show_default="the family's default, see `grounded-sam models`")]
_SEGMENTER_HELP = "Segmenter config name (`grounded-sam models`), or a hub id / checkpoint path whose config is inferred."
_SEGMENTER_DEFAULT = f"{DEFAULT_SEGMENTER} with {_DEFAULT_SEGMENTER_CONFIG.hf_ids[0]}"
SegmenterOpt = Annotated[Optional[str], typer.Option(
    "--segmenter", help=_SEGMENTER_HELP, show_default=f"{_SEGMENTER_DEFAULT}; none for --detector sam3")]
AutoSegmenterOpt = Annotated[Optional[str], typer.Option(  # for `auto`, which has no detector
    "--segmenter", help=_SEGMENTER_HELP, show_default=_SEGMENTER_DEFAULT)]
CheckpointOpt = Annotated[Optional[str], typer.Option(
    "--checkpoint", help="Weights for a --segmenter config name: a .pt/.pth, safetensors file, folder or hub id.",
    show_default="the config's hub id")]
DeviceOpt = Annotated[Optional[str], typer.Option(
    "--device", help=f"{DEVICES}; checked against this machine before any model loads.",
    show_default="cuda, else mps, else cpu", callback=device_option)]
BoxThr = Annotated[Optional[float], typer.Option(
    "--box-threshold", help="Detector score threshold.", show_default="the detector family's own, see `grounded-sam models`")]
TextThr = Annotated[Optional[float], typer.Option(
    "--text-threshold", help="Grounding-DINO-style text threshold: the caption credited to a box must score at least this.",
    show_default="off")]
NmsIou = Annotated[Optional[float], typer.Option(
    "--nms-iou", help="IoU above which the class-wise NMS merges boxes of one class found by different captions.",
    show_default=str(DEFAULT_NMS_IOU))]
Multimask = Annotated[Optional[bool], typer.Option(
    "--multimask/--single-mask", help="Decode 3 masks per box and keep the one with the best predicted IoU.",
    show_default="--single-mask")]
SampleOpt = Annotated[bool, typer.Option("--sample", help="Run on the bundled sample (a cat; CC0), as when no input is given.")]
ExemplarsOpt = Annotated[Optional[Path], typer.Option("--exemplars", help=(
    'Visual prompts (sam3): a JSON file {"dog": [[x1, y1, x2, y2], ...]} for every image, or '
    '{"exemplars": {...}, "negative_exemplars": {...}, "images": {"photo.jpg": {"exemplars": {...}}}} '
    '(images named by file name; for label, by path relative to the folder).'))]
ImageSize = Annotated[Optional[int], typer.Option(
    "--image-size", help="Segmenter input size in pixels (a multiple of 32 for SAM 2).",
    show_default=str(_DEFAULT_SEGMENTER_CONFIG.image_size))]


def _tile_option(value: str | None) -> int | str | None:
    """``--tile``: a size in pixels or ``auto``, checked before any model loads."""
    if value is None:
        return None
    from grounded_sam.pipeline.tiling import TileOptions

    tile: int | str = int(value) if value.strip().isdigit() else value.strip()
    try:
        TileOptions(tile)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    return tile


def _tile_overlap_option(value: float | None) -> float | None:
    if value is None:
        return None
    from grounded_sam.pipeline.tiling import MIN_TILE, TileOptions

    try:
        TileOptions(MIN_TILE, value)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    return value


TileOpt = Annotated[Optional[str], typer.Option(
    "--tile", help="Detect on overlapping TILE x TILE windows of each image (pixels, >= 32), or 'auto' (the detector's "
    "input size, for images over twice as large); pieces of an object cut by tile borders are merged. For large images "
    "with small objects.", show_default="off: the detector sees the whole image", callback=_tile_option)]
TileOverlapOpt = Annotated[Optional[float], typer.Option(
    "--tile-overlap", help="With --tile: the fraction of a tile that neighbouring tiles share, in [0, 0.9).",
    show_default="0.2", callback=_tile_overlap_option)]
WindowMasksOpt = Annotated[Optional[bool], typer.Option(
    "--window-masks/--whole-image-masks", help="Masks at native resolution for images larger than the segmenter's "
    "input: each box is segmented in a window of the original pixels around it (boxes grouped, each window encoded "
    "once) instead of on the whole image downscaled.", show_default="window masks for images detected with --tile")]


def _max_pixels_option(value: int | None) -> int | None:
    """``--max-pixels``: the image-file pixel limit of this process and the workers it starts."""
    if value is None:
        return None
    if value < 0:
        raise typer.BadParameter(f"{value} is negative; give a number of pixels (0 = no limit)")
    from gsam_runtime.images import set_max_pixels

    set_max_pixels(value)
    return value


MaxPixelsOpt = Annotated[Optional[int], typer.Option(
    "--max-pixels", help="Largest image file to decode, in pixels (width x height; 0 = no limit). The limit guards "
    "against decompression bombs; raise it for trusted large images (aerial, microscopy).",
    show_default="178956970, as PIL", callback=_max_pixels_option)]


ThresholdsOpt = Annotated[Optional[Path], typer.Option(
    "--thresholds", help="Per-class score thresholds from `grounded-sam tune` (its YAML), applied to the classes of "
    "--prompt / --ontology / --config.")]


def _apply_thresholds(ontology: Any, path: Path) -> Any:
    from grounded_sam.evaluation.candidates import with_settings
    from ontologies import CaptionOntology

    if not path.is_file():
        raise typer.BadParameter(f"file not found: {str(path)!r}", param_hint="--thresholds")
    try:
        tuned = CaptionOntology.from_yaml(path)
    except (ValueError, TypeError, OSError) as e:
        raise typer.BadParameter(f"{str(path)!r}: {yaml_problem(e)}", param_hint="--thresholds") from None
    found = {c: tuned.threshold(c) for c in tuned.classes() if tuned.threshold(c) is not None}
    if not set(found) & set(ontology.classes()):
        raise typer.BadParameter(f"{str(path)!r} has thresholds for {sorted(found)}, none of the classes "
                                 f"{ontology.classes()}", param_hint="--thresholds")
    other = [c for c in tuned.classes() if c in ontology.classes() and tuned.captions(c) != ontology.captions(c)]
    if other:
        typer.secho(f"note: {str(path)!r} also has other captions for {other} (a caption search); --thresholds takes "
                    f"its thresholds only: use --ontology {str(path)!r} for its captions too", fg="yellow", err=True)
    return with_settings(ontology, {c: t for c, t in found.items() if c in ontology.classes()})


def build_pipeline(prompt: str | None, ontology: Path | None, config: str | None, thresholds: Path | None = None,
                   **opts: Any) -> Any:
    """The ``GroundedSAM`` a command's options describe: ontology from ``--prompt`` / ``--ontology``,
    a preset, the model options; models checked before they load, a load failure said plainly."""
    from ontologies import CaptionOntology

    kwargs: dict[str, Any] = {}
    if config:
        import yaml

        from grounded_sam.pipeline.presets import load_preset

        try:
            kwargs.update(load_preset(config))
        except (FileNotFoundError, ValueError, TypeError, yaml.YAMLError) as e:
            problem = yaml_problem(e)
            where = f"{config!r}: " if problem.startswith("invalid YAML") else ""  # the others name the file
            raise typer.BadParameter(where + problem, param_hint="--config") from None
    if prompt and ontology:
        raise typer.BadParameter("give either --prompt or --ontology, not both")
    if prompt:
        try:
            kwargs["ontology"] = CaptionOntology(parse_prompt(prompt))
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--prompt") from None
    elif ontology:
        kwargs["ontology"] = read_ontology(ontology)
    if "ontology" not in kwargs:
        raise typer.BadParameter("say what to find with --prompt \"a dog:dog, person\" or --ontology file.yaml")
    if thresholds is not None:
        onto = kwargs["ontology"]
        kwargs["ontology"] = _apply_thresholds(onto if isinstance(onto, CaptionOntology) else CaptionOntology(onto),
                                               thresholds)
    if opts.get("tile_overlap") is not None and opts.get("tile") is None:
        raise typer.BadParameter("applies to tiled detection; give --tile too", param_hint="--tile-overlap")
    kwargs.update({key: value for key, value in opts.items() if value is not None})
    check_models_or_exit(kwargs)
    check_torch_device(kwargs.get("device"))  # torch loads now anyway
    from grounded_sam.api import GroundedSAM

    try:
        return GroundedSAM(**kwargs)
    except Exception as e:  # noqa: BLE001 (turned into a message for the shell)
        fail_loading(e)


def fail_loading(e: Exception) -> None:
    """Say why the models did not load and exit with 2."""
    from grounded_sam.pipeline.hub import loading_error_message

    typer.secho(loading_error_message(e), fg="red", err=True)
    raise typer.Exit(2)
