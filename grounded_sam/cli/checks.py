"""What the ``grounded-sam`` commands check before any model loads, and the ``models`` / ``download``
commands' work: inputs that exist and are images, ontology files that parse, option values among their
choices, models that are cached or downloadable (:mod:`grounded_sam.pipeline.hub`). Imports stay
torch-free, so these answers come in a second or two (most in well under one)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import typer

from detectors import available_detectors
from grounded_sam.assets import SAMPLE_PROMPT
from grounded_sam.pipeline.configs import list_pipeline_configs
from grounded_sam.pipeline.defaults import DEFAULT_DETECTOR, DEFAULT_SEGMENTER

__all__ = ["check_models_or_exit", "input_files", "check_label_folder", "output_folder", "one_of",
           "check_tracker_options", "read_ontology",
           "yaml_problem", "sample_prompt", "print_models", "run_download"]

SHOWN_FILES = 5  # file names a message lists before "and N more"
ONTOLOGY_FORMS = ("an ontology is 'caption: class' lines, or 'classes:' mapping each class to "
                  "{captions: [...], threshold: 0.3, negative: [...]}")


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
    the bundled sample when none are given (or with ``--sample``). A named file must have an image
    extension; a folder's other files are left out, and named on stderr."""
    from grounded_sam.assets import sample_image
    from grounded_sam.pipeline.files import IMAGE_EXTENSIONS, scan_folder

    if sample or not paths:
        if paths:
            raise typer.BadParameter("give images or --sample, not both", param_hint="--sample")
        typer.echo(f"no input given: segmenting the bundled sample {sample_image()}", err=True)
        return [sample_image()]
    files: list[Path] = []
    for p in paths:
        if not p.exists():
            raise typer.BadParameter(f"file not found: {str(p)!r}", param_hint="images")
        if not p.is_dir():
            if not p.name.lower().endswith(IMAGE_EXTENSIONS):
                raise typer.BadParameter(f"{str(p)!r} is not an image file (images end in {_listed(IMAGE_EXTENSIONS)})",
                                         param_hint="images")
            files.append(p)
            continue
        scan = scan_folder(p, extension=None)
        if not scan.files:
            raise typer.BadParameter(_nothing_found(str(p), "images", IMAGE_EXTENSIONS, [q.name for q in scan.others]),
                                     param_hint="images")
        if scan.others:
            typer.echo(f"note: left out of {str(p)!r} (not {_listed(IMAGE_EXTENSIONS)}): "
                       f"{_files(q.name for q in scan.others)}", err=True)
        files.extend(scan.files)
    return files


def check_label_folder(folder: str, extension: str | None, recursive: bool, out: Path, videos: bool) -> tuple[str, ...]:
    """The extensions ``label`` looks for (``--extension``, else every image or video type); a usage
    error when the local ``folder`` holds none of them (a remote one is listed by the job)."""
    from grounded_sam.pipeline.files import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, normalise_extensions, scan_folder

    try:
        given = [e for e in extension.split(",") if e.strip()] if extension is not None else None
        exts = normalise_extensions(given) if given is not None else (VIDEO_EXTENSIONS if videos else IMAGE_EXTENSIONS)
    except ValueError as e:
        raise typer.BadParameter(str(e).removeprefix("extension: "), param_hint="--extension") from None
    if "://" in folder:
        return exts
    scan = scan_folder(folder, exts, recursive=recursive, exclude=out.resolve())
    if not scan.files:
        deeper = [] if recursive else scan_folder(folder, exts, recursive=True, exclude=out.resolve()).files
        hint = f"; {len(deeper)} in subfolders: add --recursive" if deeper else ""
        what = "videos" if videos else "images"
        others = [q.relative_to(folder).as_posix() for q in scan.others]
        raise typer.BadParameter(_nothing_found(folder, what, exts, others) + hint, param_hint="folder")
    return exts


def _nothing_found(folder: str, what: str, exts: Sequence[str], others: list[str]) -> str:
    there = f"; it holds {_files(others)}" if others else ""
    return f"no {what} in {folder!r} (looked for {_listed(exts)}){there}"


def _listed(exts: Sequence[str]) -> str:
    return ", ".join(exts)


def _files(names: Any) -> str:
    """``"3 other files: a.txt, b.gif, c.doc"``, the first :data:`SHOWN_FILES` named."""
    names = list(names)
    more = f" and {len(names) - SHOWN_FILES} more" if len(names) > SHOWN_FILES else ""
    return f"{len(names)} other file{'s' if len(names) != 1 else ''}: {', '.join(names[:SHOWN_FILES])}{more}"


@contextlib.contextmanager
def output_folder(out: Path) -> Iterator[Path]:
    """``out``, made for a command's files, and removed again when the command wrote nothing there."""
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        yield out
    finally:
        if made and out.is_dir() and not any(out.iterdir()):
            out.rmdir()


def one_of(names: Sequence[str]) -> Callable[[str | None], str | None]:
    """An option callback that takes ``names`` only (``None`` too: the option left out)."""
    def check(value: str | None) -> str | None:
        if value is not None and value not in names:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(names)}")
        return value

    return check


def check_tracker_options(tracker: str, detector: str | None, memory: str | None, redetect_every: int | None) -> None:
    """``--memory`` and ``--redetect-every`` belong to the sam2 tracker: a usage error where SAM 3's
    concept tracker runs (``--tracker sam3``, or ``auto`` with ``--detector sam3``)."""
    if tracker == "sam3" or (tracker == "auto" and detector == "sam3"):
        why = "--tracker sam3" if tracker == "sam3" else "--detector sam3 (its tracker is SAM 3's)"
        for hint, value in (("--memory", memory), ("--redetect-every", redetect_every)):
            if value is not None:
                raise typer.BadParameter(f"applies to the sam2 tracker, not to {why}: SAM 3's concept tracker has "
                                         "its own memory and detects on every frame; give --tracker sam2 or leave "
                                         f"{hint} out", param_hint=hint)


def read_ontology(path: Path) -> Any:
    """The ``--ontology`` file as a ``CaptionOntology``; a one-line usage error saying what is wrong and where."""
    from ontologies import CaptionOntology

    if not path.is_file():
        raise typer.BadParameter(f"file not found: {str(path)!r}", param_hint="--ontology")
    try:
        return CaptionOntology.from_yaml(path)
    except (ValueError, TypeError, OSError) as e:
        problem = yaml_problem(e)
        hint = "" if problem.startswith("invalid YAML") else f" ({ONTOLOGY_FORMS})"
        raise typer.BadParameter(f"{str(path)!r}: {problem}{hint}", param_hint="--ontology") from None


def yaml_problem(e: BaseException) -> str:
    """An error reading a YAML file as one line: a syntax error by its line and column."""
    import yaml

    cause = e if isinstance(e, yaml.YAMLError) else e.__cause__
    mark = getattr(cause, "problem_mark", None)
    if isinstance(cause, yaml.MarkedYAMLError) and mark is not None:
        return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {cause.problem}"
    return " ".join(str(e).split())


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
