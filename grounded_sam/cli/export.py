"""``grounded-sam export``: a segmenter model's graphs for another runtime (:mod:`segmenter.export`).

Inputs (model name, format, output folder) are checked before torch loads; the weights are those
of ``--checkpoint`` or the config's hub id, checked to be cached or downloadable first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from grounded_sam.cli.options import ImageSize
from segmenter.export.quantize import PRECISIONS, QUANTIZATIONS  # numpy only; onnx loads when converting

__all__ = ["EXPORT_FORMATS", "export_command"]

EXPORT_FORMATS = ("onnx",)


def export_command(
    model: Annotated[str, typer.Option("--model", help="Segmenter config name, e.g. sam2.1_hiera_tiny "
                                       "(`grounded-sam models` lists them).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for the graphs and manifest.json "
                                      "(must not exist unless --overwrite).")],
    checkpoint: Annotated[Optional[str], typer.Option(
        "--checkpoint", help="Weights for --model: a .pt/.pth, safetensors file, folder or hub id.",
        show_default="the model's own hub checkpoint")] = None,
    fmt: Annotated[str, typer.Option("--format", help=f"Export format: {', '.join(EXPORT_FORMATS)}.")] = "onnx",
    image_size: ImageSize = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output folder.")] = False,
    precision: Annotated[str, typer.Option(
        "--precision", help="Graph precision: fp32, or fp16 for GPU providers (inputs and outputs stay fp32).")] = "fp32",
    quantize: Annotated[str, typer.Option(
        "--quantize", help="none, or int8: dynamic int8 quantization of the image encoder (ONNX Runtime, CPU); "
        "the export reports its mask IoU against fp32.")] = "none",
    video: Annotated[bool, typer.Option(
        "--video", help="Also export the video parts (memory attention, memory encoder, tracking heads): "
        "segmenter.export.OnnxVideoPredictor tracks with them. fp32 only.")] = False,
) -> None:
    """Export a segmenter's image (and video) parts to ONNX.

    The image encoder and the prompt decoder of a SAM 2 / SAM 2.1 model with manifest.json; fp32, or
    with --precision fp16 / --quantize int8 converted after export, the mask IoU against fp32 printed;
    with --video the tracking graphs too.
    Run the result without torch: segmenter.export.OnnxImagePredictor(out) (pip install ".[onnx]" in the project folder)."""
    from segmenter.config import list_model_configs, load_model_config

    def fail(message: str) -> None:
        typer.secho(f"error: {message}", fg="red", err=True)
        raise typer.Exit(2)

    if fmt not in EXPORT_FORMATS:
        fail(f"--format {fmt!r} is not one of {', '.join(EXPORT_FORMATS)}")
    if precision not in PRECISIONS:
        fail(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if quantize not in QUANTIZATIONS:
        fail(f"--quantize {quantize!r} is not one of {', '.join(QUANTIZATIONS)}")
    if precision == "fp16" and quantize == "int8":
        fail("--precision fp16 (GPU providers) and --quantize int8 (CPU) do not go together; choose one")
    if video and (precision != "fp32" or quantize != "none"):
        fail("--video exports fp32 graphs only for now (the video graphs are not verified converted); "
             "leave out --precision / --quantize, or export the image parts alone")
    names = list_model_configs()
    if model not in names:
        fail(f"unknown --model {model!r}; available: {', '.join(names)}")
    if not model.startswith("sam2"):
        fail(f"--model {model!r}: ONNX export supports SAM 2 / SAM 2.1 models only")
    if out.exists() and not overwrite:
        fail(f"output folder {str(out)!r} already exists; choose another --out or pass --overwrite")
    if checkpoint is None:
        ids = load_model_config(model).hf_ids
        if not ids:
            fail(f"config {model!r} names no hub checkpoint; pass --checkpoint")
        checkpoint = ids[0]
    try:
        from grounded_sam.pipeline.hub import (
            ModelsUnavailableError,
            check_models,
            models_needed,
        )

        check_models(models_needed(detector=None, segmenter=model, checkpoint=checkpoint))
    except (ModelsUnavailableError, FileNotFoundError, ValueError) as e:
        fail(str(e))

    from segmenter import build_sam
    from segmenter.export import ExportError
    from segmenter.export.onnx import OnnxExportOptions, to_onnx

    try:
        net = build_sam(model, checkpoint=checkpoint, device="cpu", image_size=image_size)
    except (ValueError, FileNotFoundError) as e:  # weights that do not fit the config say which config they fit
        fail(f"--checkpoint {checkpoint!r} for --model {model!r}: {e}")
    try:
        to_onnx(net, out, parts=("image", "video") if video else ("image",),
                options=OnnxExportOptions(overwrite=overwrite, model_name=model))
        from segmenter.export.quantize import convert_precision

        if precision != "fp32" or quantize != "none":
            import onnxruntime

            onnxruntime.set_default_logger_severity(3)  # fp16 graphs: notes on ops left unfolded on the CPU
            typer.echo(f"converting to {'int8 (image encoder)' if quantize == 'int8' else precision} and "
                       "measuring masks against fp32 on a sample ...", err=True)
        # fp32: records the precision of every graph; otherwise converts and reports the IoU vs fp32
        manifest, report = convert_precision(out, precision=precision, quantize=quantize)
    except (ExportError, ImportError) as e:
        fail(str(e))
    files = ", ".join(g.file for g in manifest.graphs.values())
    typer.echo(f"exported {model} ({manifest.image_size} px) to {out}: {files}, manifest.json")
    if report is not None:
        typer.echo(report.summary())
