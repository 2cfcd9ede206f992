""":func:`evaluate`: labels against ground truth, every metric in one :class:`~grounded_sam.evaluation.report.EvalReport`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from grounded_sam.evaluation.coco_ap import coco_ap
from grounded_sam.evaluation.operating import class_outcomes, prf
from grounded_sam.evaluation.sa_co import sa_co_metrics
from grounded_sam.evaluation.data import EvalInputError, EvalSet, read_ground_truth, read_predictions
from grounded_sam.evaluation.matching import IouType, iou_type_for
from grounded_sam.evaluation.report import EvalReport

__all__ = ["evaluate", "check_pair"]


def _listed(names: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(repr(n) for n in list(names)[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_pair(gt: EvalSet, pred: EvalSet, ground_truth_images_only: bool = False) -> EvalSet:
    """Raise :class:`EvalInputError` unless ``pred`` can be scored against ``gt``: the same images
    (the differences listed; with ``ground_truth_images_only`` the predictions of other images are
    left out), the same image sizes, and only classes that the ground truth names. Returns the
    predictions to score."""
    if not gt.images:
        raise EvalInputError(f"the ground truth {gt.source} has no images")
    unknown = sorted({i.category for i in pred.instances} - set(gt.classes))
    if unknown:
        raise EvalInputError(f"the predictions name classes the ground truth does not have: {_listed(unknown)} "
                             f"(ground truth classes: {_listed(gt.classes, 30)}); map them with class_map "
                             "(CLI: --class-map pred_name:gt_name)")
    missing = sorted(set(gt.images) - set(pred.images))
    extra = sorted(set(pred.images) - set(gt.images))
    if missing:
        raise EvalInputError(f"{len(missing)} ground-truth image(s) have no predictions in {pred.source}: "
                             f"{_listed(missing)}")
    if extra and not ground_truth_images_only:
        raise EvalInputError(f"{len(extra)} predicted image(s) are not in the ground truth {gt.source}: {_listed(extra)}"
                             "; evaluate on the ground truth's images only with ground_truth_images_only=True "
                             "(CLI: --gt-images-only)")
    sizes = [k for k in gt.images if (gt.images[k].width, gt.images[k].height)
             != (pred.images[k].width, pred.images[k].height)]
    if sizes:
        k = sizes[0]
        raise EvalInputError(f"{len(sizes)} image(s) differ in size between ground truth and predictions, e.g. {k!r}: "
                             f"{gt.images[k].width}x{gt.images[k].height} vs "
                             f"{pred.images[k].width}x{pred.images[k].height}")
    if extra:
        keep = set(gt.images)
        pred = EvalSet({k: v for k, v in pred.images.items() if k in keep},
                       [i for i in pred.instances if i.image in keep], pred.classes, pred.source)
    return pred


def evaluate(
    ground_truth: Any,
    predictions: Any,
    *,
    class_map: Mapping[str, str] | None = None,
    classes: Sequence[str] | None = None,
    ground_truth_images_only: bool = False,
    iou_threshold: float = 0.5,
) -> EvalReport:
    """Score ``predictions`` against ``ground_truth`` (see :mod:`grounded_sam.evaluation`).

    Args:
        ground_truth: a COCO instances JSON, a ``label`` output folder (its images reviewed in the
            app), or an :class:`EvalSet`.
        predictions: a ``label`` output folder, a COCO results JSON (for a COCO ground truth), an
            :class:`EvalSet`, or ``{image file name: sv.Detections}`` (with ``classes``).
        class_map: prediction class name -> ground-truth class name, for names that differ.
        ground_truth_images_only: leave out predictions of images the ground truth lacks
            (else they are an error).
        iou_threshold: the IoU at which the per-class precision / recall / F1 count a match.
    """
    gt = read_ground_truth(ground_truth)
    pred = read_predictions(predictions, ground_truth, classes)
    if class_map:
        pred = pred.rename(class_map)
    pred = check_pair(gt, pred, ground_truth_images_only)
    iou_types: list[IouType] = ["segm", "bbox"] if iou_type_for(gt, pred) == "segm" else ["bbox"]
    main = iou_types[0]
    matching = class_outcomes(gt, pred, main, iou_threshold)
    per_class = {name: prf(*o.counts()) for name, o in matching.outcomes.items()}
    coco = {t: coco_ap(gt, pred, t) for t in iou_types}
    for name, row in per_class.items():
        row["AP"] = coco[main]["per_class"][name]["AP"]
        row["AP50"] = coco[main]["per_class"][name]["AP50"]
        row["gt_instances"] = sum(1 for i in gt.instances if i.category == name and not i.iscrowd)
        row["predictions"] = sum(1 for i in pred.instances if i.category == name)
    report = EvalReport(
        ground_truth=gt.source, predictions=pred.source, classes=list(gt.classes), images=len(gt.images),
        iou_type=main, iou_threshold=iou_threshold,
        coco={t: coco[t]["stats"] for t in iou_types},
        sa_co={t: sa_co_metrics(gt, pred, t) for t in iou_types},
        per_class=per_class, confusions=matching.confusions,
        pr_curves={name: _curve(o) for name, o in matching.outcomes.items()},
        worst_images=_worst(matching.image_errors),
    )
    report.data = (gt, pred)
    return report


def _curve(outcomes: Any, points: int = 200) -> dict[str, list[float]]:
    """A class's precision-recall curve (at most ``points`` points, from the highest threshold)."""
    thresholds, precision, recall, _ = outcomes.curve()
    if len(thresholds) > points:
        keep = np.unique(np.linspace(0, len(thresholds) - 1, points).round().astype(int))
        thresholds, precision, recall = thresholds[keep], precision[keep], recall[keep]
    return {"threshold": thresholds.tolist(), "precision": precision.tolist(), "recall": recall.tolist()}


def _worst(errors: Mapping[str, tuple[int, int]], count: int = 8) -> list[dict[str, Any]]:
    """The images with the most errors (false positives + false negatives), most first."""
    ranked = sorted(((fp + fn, fp, fn, image) for image, (fp, fn) in errors.items() if fp + fn), key=lambda r: (-r[0], r[3]))
    return [{"image": image, "FP": fp, "FN": fn} for _, fp, fn, image in ranked[:count]]
