"""``grounded-sam export``: a segmenter model's graphs for another runtime (:mod:`segmenter.export`).

Inputs (model name, format, output folder) are checked before torch loads; the weights are those
of ``--checkpoint`` or the config's hub id, checked to be cached or downloadable first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from grounded_sam.cli.options import ImageSize

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
) -> None:
    """Export a segmenter's image parts to ONNX.

    The image encoder and the prompt decoder of a SAM 2 / SAM 2.1 model, fp32, with manifest.json.
    Run the result without torch: segmenter.export.OnnxImagePredictor(out) (pip install ".[onnx]" in the project folder)."""
    from segmenter.config import list_model_configs, load_model_config

    def fail(message: str) -> None:
        typer.secho(f"error: {message}", fg="red", err=True)
        raise typer.Exit(2)

    if fmt not in EXPORT_FORMATS:
        fail(f"--format {fmt!r} is not one of {', '.join(EXPORT_FORMATS)}")
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
        manifest = to_onnx(net, out, parts=("image",), options=OnnxExportOptions(overwrite=overwrite, model_name=model))
    except (ExportError, ImportError) as e:
        fail(str(e))
    files = ", ".join(g.file for g in manifest.graphs.values())
    typer.echo(f"exported {model} ({manifest.image_size} px) to {out}: {files}, manifest.json")
