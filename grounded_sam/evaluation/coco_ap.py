"""COCO AP / AR, computed by ``COCOeval`` (no re-implementation): faster-coco-eval's C++ port,
whose numbers are pycocotools' (the tests check them against pycocotools' own ``COCOeval`` to 1e-9;
it is ~10x faster at 100k masks).

Ground truth and predictions (:class:`~grounded_sam.evaluation.data.EvalSet`) become two COCO
objects that share image ids (images in key order, from 1) and category ids (the ground truth's
classes in order, from 1). Box AP scores the predictions' boxes (the detector's), mask AP their
masks; each is given to ``COCOeval`` on its own, as a results list of that kind only, so that
``loadRes`` derives areas from the masks for mask AP.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np

from grounded_sam.evaluation.data import EvalSet
from grounded_sam.evaluation.matching import IouType

__all__ = ["STAT_NAMES", "coco_objects", "coco_ap"]

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def coco_objects(gt: EvalSet, pred: EvalSet, iou_type: IouType) -> tuple[Any, Any]:
    """``(COCO ground truth, COCO results)`` for ``COCOeval`` (module docs)."""
    from faster_coco_eval import COCO
    from pycocotools import mask as mask_utils

    image_ids = {key: i for i, key in enumerate(sorted(gt.images), start=1)}
    cat_ids = {name: i for i, name in enumerate(gt.classes, start=1)}
    anns = []
    for k, inst in enumerate(gt.instances, start=1):
        ann: dict[str, Any] = {"id": k, "image_id": image_ids[inst.image], "category_id": cat_ids[inst.category],
                               "iscrowd": int(inst.iscrowd), "bbox": list(inst.bbox)}
        if inst.rle is not None:
            ann["segmentation"] = inst.rle
        if inst.area is not None:  # the file's own, as COCOeval reads it
            ann["area"] = inst.area
        else:
            ann["area"] = float(mask_utils.area(inst.rle)) if inst.rle is not None else float(inst.bbox[2] * inst.bbox[3])
        anns.append(ann)
    dataset = {
        "images": [{"id": i, "file_name": key, "width": gt.images[key].width, "height": gt.images[key].height}
                   for key, i in image_ids.items()],
        "categories": [{"id": i, "name": name} for name, i in cat_ids.items()],
        "annotations": anns,
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(dataset)
    results = []
    for inst in pred.instances:
        res: dict[str, Any] = {"image_id": image_ids[inst.image], "category_id": cat_ids[inst.category],
                               "score": inst.score}
        if iou_type == "segm":
            res["segmentation"] = inst.rle
        else:
            res["bbox"] = list(inst.bbox)
        results.append(res)
    with contextlib.redirect_stdout(io.StringIO()):
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:  # nothing found: an empty result set
            coco_dt = COCO({**dataset, "annotations": []})
    return coco_gt, coco_dt


def coco_ap(gt: EvalSet, pred: EvalSet, iou_type: IouType) -> dict[str, Any]:
    """``{"stats": {AP, AP50, ..., ARl}, "per_class": {class: {"AP", "AP50"}}}`` from ``COCOeval``
    (-1 where COCO has no value: no ground truth in that area range or class)."""
    from faster_coco_eval import COCOeval_faster

    coco_gt, coco_dt = coco_objects(gt, pred, iou_type)
    evaluator = COCOeval_faster(coco_gt, coco_dt, iou_type, print_function=lambda *a, **k: None)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = {name: float(v) for name, v in zip(STAT_NAMES, evaluator.stats)}
    precision = evaluator.eval["precision"]  # (T, R, K, A, M): IoU thresholds, recall, class, area, max dets
    per_class = {}
    for k, name in enumerate(gt.classes):
        all_area, last = precision[:, :, k, 0, -1], precision[0, :, k, 0, -1]
        per_class[name] = {"AP": _mean(all_area), "AP50": _mean(last)}
    return {"stats": stats, "per_class": per_class}


def _mean(values: np.ndarray) -> float | None:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else None
