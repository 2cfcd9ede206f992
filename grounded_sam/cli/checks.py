"""What the ``grounded-sam`` commands check before any model loads, and the ``models`` / ``download``
commands' work: inputs that exist, models that are cached or downloadable (:mod:`grounded_sam.pipeline.hub`).
Imports stay torch-free, so these answers come in a second or two."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from detectors import available_detectors
from grounded_sam.assets import SAMPLE_PROMPT
from grounded_sam.pipeline.configs import list_pipeline_configs
from grounded_sam.pipeline.defaults import DEFAULT_DETECTOR, DEFAULT_SEGMENTER

__all__ = ["check_models_or_exit", "input_files", "sample_prompt", "print_models", "run_download"]


def check_models_or_exit(kwargs: dict[str, Any]) -> None:
    """Stop with one message naming every model the pipeline of ``kwargs`` needs when any of them is
    neither cached nor downloadable from here (no torch imported yet: this answers in a second or two)."""
    from grounded_sam.pipeline.hub import ModelsUnavailableError, check_models, models_needed

    detector, model_id = kwargs.get("detector"), kwargs.get("detector_model_id")
    if model_id is not None and (Path(model_id).exists() or model_id.startswith((".", "/", "~"))):
        raise typer.BadParameter(f"{model_id!r} is a local path: give a save_pretrained folder with --detector "
                                 "(its family is read from its config.json)", param_hint="--detector-model-id")
    if model_id is not None and detector is not None and detector not in available_detectors():
        raise typer.BadParameter(f"--detector {detector!r} is not a family name "
                                 f"({', '.join(available_detectors())}); --detector-model-id needs one", param_hint="--detector")
    try:
        needs = models_needed(detector or DEFAULT_DETECTOR, model_id, kwargs.get("segmenter"), kwargs.get("checkpoint"))
        check_models(needs, go_offline=True)
    except (ModelsUnavailableError, FileNotFoundError, ValueError) as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2) from None


def input_files(paths: list[Path] | None, sample: bool) -> list[Path]:
    """The image files of the ``images`` arguments (folders listed), checked before any model loads;
    the bundled sample when none are given (or with ``--sample``)."""
    from grounded_sam.assets import sample_image
    from grounded_sam.pipeline.files import list_images

    if sample or not paths:
        if paths:
            raise typer.BadParameter("give images or --sample, not both", param_hint="--sample")
        typer.echo(f"no input given: segmenting the bundled sample {sample_image()}", err=True)
        return [sample_image()]
    files: list[Path] = []
    for p in paths:
        if not p.exists():
            raise typer.BadParameter(f"file not found: {str(p)!r}", param_hint="images")
        found = list_images(p, extension=None) if p.is_dir() else [p]
        if p.is_dir() and not found:
            raise typer.BadParameter(f"folder {str(p)!r} holds no images", param_hint="images")
        files.extend(found)
    return files


def sample_prompt(prompt: str | None, ontology: Path | None, config: str | None, sampled: bool) -> str | None:
    """``--prompt`` as given, or the sample's own prompt when running on the sample with none."""
    if prompt or ontology or not sampled:
        return prompt
    return SAMPLE_PROMPT


def print_models() -> None:
    """``grounded-sam models``: detectors and segmenters, hub ids, licences, defaults, what is cached."""
    from grounded_sam.pipeline.hub import catalogue, is_cached

    typer.echo("detectors (--detector; another checkpoint of a family: --detector-model-id):")
    typer.echo(f"  {'name':<16} {'hub id':<38} {'box thr.':<9} {'cached':<7} licence")
    for need, threshold in catalogue("detector"):
        mark = "*" if need.name == DEFAULT_DETECTOR else " "
        typer.echo(f"{mark} {need.name:<16} {need.source:<38} {threshold:<9} {'yes' if is_cached(need) else 'no':<7} {need.licence}")
    typer.echo("segmenters (--segmenter; other weights for a config: --checkpoint):")
    typer.echo(f"  {'name':<24} {'hub id':<34} {'cached':<7} licence")
    for need, _ in catalogue("segmenter"):
        mark = "*" if need.name == DEFAULT_SEGMENTER else " "
        typer.echo(f"{mark} {need.name:<24} {need.source:<34} {'yes' if is_cached(need) else 'no':<7} {need.licence}")
    typer.echo("* default. Presets (--config): " + ", ".join(list_pipeline_configs())
               + ". Fetch models for offline use: grounded-sam download [--preset NAME].")


def run_download(preset: str, given: dict[str, Any]) -> None:
    """``grounded-sam download``: fetch what ``preset`` needs (``given`` model options override it)."""
    from grounded_sam.pipeline.hub import download as fetch
    from grounded_sam.pipeline.hub import models_needed, offline_reason
    from grounded_sam.pipeline.presets import load_preset

    try:
        kwargs = load_preset(preset)
    except (FileNotFoundError, ValueError) as e:
        raise typer.BadParameter(str(e), param_hint="--preset") from None
    kwargs.update({k: v for k, v in given.items() if v is not None})
    try:
        needs = models_needed(kwargs.get("detector", DEFAULT_DETECTOR), kwargs.get("detector_model_id"),
                              kwargs.get("segmenter"), kwargs.get("checkpoint"))
    except (FileNotFoundError, ValueError) as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2) from None
    remote = [n for n in needs if not n.local]
    why = offline_reason() if remote else None
    if why is not None:
        typer.secho(f"error: cannot download: {why}. On a connected machine run:", fg="red", err=True)
        for need in remote:
            typer.secho(f"  {need.fetch_command()}", err=True)
        raise typer.Exit(2)
    for need in needs:
        typer.echo(f"{need.role}: {need.name} <- {need.source} ({need.licence})")
    try:
        folders = fetch(needs)
    except Exception as e:  # noqa: BLE001 (turned into a message for the shell)
        typer.secho(f"error: download failed: {type(e).__name__}: {e}", fg="red", err=True)
        raise typer.Exit(2) from None
    for repo_id, folder in folders.items():
        typer.echo(f"{repo_id} -> {folder}")
