"""``grounded-sam eval`` and ``tune``: labels scored against ground truth, thresholds tuned on it
(:mod:`grounded_sam.evaluation`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from grounded_sam.cli.options import (
    BoxThr, CheckpointOpt, DetectorId, DetectorOpt, DeviceOpt, ImageSize, Multimask, NmsIou, OntologyFile, Preset,
    Prompt, SegmenterOpt, TextThr, build_pipeline, fail_loading,
)

__all__ = ["eval_command", "tune_command", "parse_class_map"]


def parse_class_map(text: str | None) -> dict[str, str]:
    """``"kitten:cat, puppy:dog"`` -> ``{"kitten": "cat", "puppy": "dog"}`` (prediction name: ground-truth name)."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        source, sep, target = part.partition(":")
        if not sep or not source.strip() or not target.strip():
            raise typer.BadParameter(f"expected prediction_name:ground_truth_name, got {part.strip()!r}",
                                     param_hint="--class-map")
        out[source.strip()] = target.strip()
    return out


def eval_command(
    gt: Annotated[Path, typer.Option("--gt", help="Ground truth: a COCO instances JSON, or a `label` output folder "
                                     "(its images reviewed in the app).")],
    pred: Annotated[Optional[Path], typer.Option("--pred", help="Predictions: a `label` output folder, or a COCO "
                                                 "results JSON (for a COCO ground truth).")] = None,
    compare: Annotated[Optional[str], typer.Option("--compare", help="Instead of --pred: run these pipeline presets "
                                                   "(names or YAML paths, comma-separated) on the ground truth's "
                                                   "images and compare them: AP, cgF1, F1 (own and tuned "
                                                   "thresholds), seconds per image, peak memory.")] = None,
    prompt: Prompt = None, ontology: OntologyFile = None, device: DeviceOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Report folder: metrics.json, report.md, a "
                                                "self-contained report.html, PR curves, the worst images.")] = None,
    images: Annotated[Optional[Path], typer.Option("--images", help="Folder the image file names are relative to, "
                                                   "for drawing the worst images.",
                                                   show_default="the ground truth's folder")] = None,
    class_map: Annotated[Optional[str], typer.Option("--class-map", help="Prediction class names that differ from the "
                                                     "ground truth's: 'kitten:cat, puppy:dog'.")] = None,
    gt_images_only: Annotated[bool, typer.Option("--gt-images-only", help="Score only the ground truth's images "
                                                 "(predictions of other images are left out, not an error).")] = False,
    iou: Annotated[float, typer.Option("--iou", help="IoU at which the per-class precision / recall / F1 count a match.")] = 0.5,
) -> None:
    """Score labels against ground truth, or compare presets on it.

    COCO box / mask AP (pycocotools), SAM 3's cgF1, per-class precision / recall / F1 and class
    confusions; with --compare, pipeline presets run on the ground truth's images."""
    mapping = parse_class_map(class_map)
    if not 0.0 < iou <= 1.0:
        raise typer.BadParameter(f"must be in (0, 1], got {iou}", param_hint="--iou")
    if (pred is None) == (compare is None):
        raise typer.BadParameter("give --pred (labels to score) or --compare (presets to run), one of them")
    if compare is not None:
        _compare(gt, compare, images, out, mapping, prompt, ontology, device, iou)
        return
    if prompt is not None or ontology is not None or device is not None:
        raise typer.BadParameter("--prompt / --ontology / --device apply to --compare (the pipelines it runs)")
    from grounded_sam.evaluation import EvalInputError, evaluate

    try:
        report = evaluate(gt, pred, class_map=mapping, ground_truth_images_only=gt_images_only, iou_threshold=iou)
    except EvalInputError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(report.summary())
    if out is not None:
        root = images if images is not None else (gt if gt.is_dir() else gt.parent)
        typer.echo(f"report -> {report.save(out, images=root)}")


def tune_command(
    gt: Annotated[Path, typer.Option("--gt", help="Ground truth: a COCO instances JSON, or a `label` output folder "
                                     "(its images reviewed in the app).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the tuned ontology YAML (use it with "
                                      "--ontology).")],
    images: Annotated[Optional[Path], typer.Option("--images", help="Folder the ground truth's file names are "
                                                   "relative to.", show_default="the ground truth's folder")] = None,
    objective: Annotated[str, typer.Option("--objective", help="f1 | precision>=P | recall>=R (per class), or cgf1 "
                                           "(SAM 3's measure, all classes together).")] = "f1",
    candidates: Annotated[Optional[list[str]], typer.Option("--candidates", help="Captions to try for a class beside its "
                                                            "own: 'car=a car|automobile|vehicle' (repeat it, or join "
                                                            "classes with ';'). All are prompted in the same pass; "
                                                            "each class gets the set of captions that scores best.")] = None,
    floor: Annotated[float, typer.Option("--floor", help="Keep every candidate scoring at least this in the one "
                                         "pass of the models.")] = 0.05,
    class_map: Annotated[Optional[str], typer.Option("--class-map", help="Ontology class names that differ from the "
                                                     "ground truth's: 'kitten:cat'.")] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="Also evaluate with the tuned thresholds (a second "
                                                   "pass of the models) and write the report here.")] = None,
    prompt: Prompt = None, ontology: OntologyFile = None, config: Preset = None,
    detector: DetectorOpt = None, detector_model_id: DetectorId = None, segmenter: SegmenterOpt = None,
    checkpoint: CheckpointOpt = None, device: DeviceOpt = None, box_threshold: BoxThr = None,
    text_threshold: TextThr = None, nms_iou: NmsIou = None, multimask: Multimask = None, image_size: ImageSize = None,
) -> None:
    """Tune per-class score thresholds on ground truth.

    With --candidates, captions too: one pass of the models, then an offline sweep; writes the
    ontology with them (label / segment / track take it with --ontology, or its thresholds alone
    with --thresholds)."""
    from grounded_sam.evaluation.captions import parse_candidates
    from grounded_sam.evaluation.objectives import parse_objective

    mapping = parse_class_map(class_map)
    try:
        parse_objective(objective)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--objective") from None
    try:
        wanted = parse_candidates(candidates)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--candidates") from None
    if not 0.0 <= floor <= 1.0:
        raise typer.BadParameter(f"must be in [0, 1], got {floor}", param_hint="--floor")
    if not gt.exists():
        raise typer.BadParameter(f"not found: {str(gt)!r}", param_hint="--gt")
    from grounded_sam.evaluation import EvalInputError

    gs = build_pipeline(prompt, ontology, config, detector=detector, detector_model_id=detector_model_id,
                        segmenter=segmenter, checkpoint=checkpoint, device=device, box_threshold=box_threshold,
                        text_threshold=text_threshold, nms_iou=nms_iou, multimask=multimask, image_size=image_size)
    try:
        result = gs.tune(gt, images=images, objective=objective, floor=floor, class_map=mapping, candidates=wanted)
    except EvalInputError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(result.summary())
    typer.echo(f"tuned ontology -> {result.save(out)}")
    if report is not None:
        import json

        gs.ontology = result.ontology
        tuned = gs.evaluate(gt, images=images, class_map=mapping)
        typer.echo(tuned.summary())
        folder = tuned.save(report)
        (Path(folder) / "tuning.json").write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
        typer.echo(f"report -> {folder} (tuning.json: the tuning's before / after and caption tables)")


def _compare(gt: Path, presets: str, images: Path | None, out: Path | None, mapping: dict[str, str],
             prompt: str | None, ontology: Path | None, device: str | None, iou: float) -> None:
    """``eval --compare``: each preset built (models checked first) and run on the ground truth's images."""
    from grounded_sam.cli.checks import check_models_or_exit
    from grounded_sam.evaluation import EvalInputError
    from grounded_sam.evaluation.compare import compare
    from grounded_sam.evaluation.data import read_ground_truth
    from grounded_sam.pipeline.presets import load_preset
    from grounded_sam.pipeline.prompts import parse_prompt
    from ontologies import CaptionOntology

    names = [p.strip() for p in presets.split(",") if p.strip()]
    specs = {}
    for name in names:
        try:
            specs[name] = load_preset(name)
        except (FileNotFoundError, ValueError) as e:
            raise typer.BadParameter(str(e), param_hint="--compare") from None
    try:
        truth = read_ground_truth(gt)
    except EvalInputError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2) from None
    if prompt and ontology:
        raise typer.BadParameter("give either --prompt or --ontology, not both")
    try:
        onto = (CaptionOntology(parse_prompt(prompt)) if prompt else CaptionOntology.from_yaml(ontology) if ontology
                else CaptionOntology({c: c for c in truth.classes}))  # default: the class names as captions
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--prompt / --ontology") from None
    for spec in specs.values():
        spec.update(ontology=onto, **({"device": device} if device else {}))
        check_models_or_exit(spec)

    def factory(spec: dict) -> object:
        def build() -> object:
            from grounded_sam.api import GroundedSAM

            try:
                return GroundedSAM(**spec)
            except Exception as e:  # noqa: BLE001 - said plainly, as for every command
                fail_loading(e)
        return build

    try:
        root = images if images is not None else (gt if gt.is_dir() else gt.parent)
        result = compare({n: factory(s) for n, s in specs.items()}, truth, images=root, class_map=mapping,
                         iou_threshold=iou)
    except EvalInputError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(result.table())
    if out is not None:
        typer.echo(f"comparison -> {result.save(out)}")
