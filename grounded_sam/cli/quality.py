"""``grounded-sam eval``: labels scored against ground truth (:mod:`grounded_sam.evaluation`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

__all__ = ["eval_command", "parse_class_map"]


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
    pred: Annotated[Path, typer.Option("--pred", help="Predictions: a `label` output folder, or a COCO results JSON "
                                       "(for a COCO ground truth).")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Report folder (metrics.json, report.md).")] = None,
    class_map: Annotated[Optional[str], typer.Option("--class-map", help="Prediction class names that differ from the "
                                                     "ground truth's: 'kitten:cat, puppy:dog'.")] = None,
    gt_images_only: Annotated[bool, typer.Option("--gt-images-only", help="Score only the ground truth's images "
                                                 "(predictions of other images are left out, not an error).")] = False,
    iou: Annotated[float, typer.Option("--iou", help="IoU at which the per-class precision / recall / F1 count a match.")] = 0.5,
) -> None:
    """Score labels against ground truth: COCO box / mask AP (pycocotools), SAM 3's cgF1, per-class
    precision / recall / F1 and class confusions."""
    mapping = parse_class_map(class_map)
    if not 0.0 < iou <= 1.0:
        raise typer.BadParameter(f"must be in (0, 1], got {iou}", param_hint="--iou")
    from grounded_sam.evaluation import EvalInputError, evaluate

    try:
        report = evaluate(gt, pred, class_map=mapping, ground_truth_images_only=gt_images_only, iou_threshold=iou)
    except EvalInputError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(report.summary())
    if out is not None:
        typer.echo(f"report -> {report.save(out)}")
