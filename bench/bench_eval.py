"""(n) Label-quality evaluation at dataset scale: ``evaluate`` on N images x 20 instances (masks).

Synthetic ground truth (10 classes, 20 rectangular-ish masks per 256 x 256 image) and predictions
(each instance found ~90 % of the time, shifted by a few pixels, plus 3 false ones per image),
timed per part: COCOeval (segm and bbox), SAM 3's cgF1 (both IoU types), per-class counts.
The target (issue 26): 5,000 images x 20 instances in <= 20 s on a 2-core CPU.

    python bench/bench_eval.py --images 5000
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def make(n: int, seed: int = 0):
    from pycocotools import mask as mask_utils

    from grounded_sam.evaluation.data import EvalImage, EvalInstance, EvalSet

    rng = np.random.default_rng(seed)
    classes = [f"class{k}" for k in range(10)]
    gt = EvalSet(classes=classes, source="synthetic gt")
    pred = EvalSet(classes=classes, source="synthetic predictions")
    h = w = 256
    for i in range(n):
        key = f"img{i:05d}.jpg"
        gt.images[key] = pred.images[key] = EvalImage(key, w, h)
        masks, owners = [], []
        for _ in range(20):
            x, y = rng.integers(0, w - 40, 2)
            bw, bh = rng.integers(8, 40, 2)
            m = np.zeros((h, w), np.uint8)
            m[y:y + bh, x:x + bw] = 1
            masks.append(m)
            owners.append(classes[int(rng.integers(0, 10))])
        for m, c in zip(masks, owners):
            r = mask_utils.encode(np.asfortranarray(m))
            gt.instances.append(EvalInstance(key, c, tuple(mask_utils.toBbox(r).tolist()),
                                             {"size": r["size"], "counts": r["counts"].decode()}))
            if rng.random() < 0.9:
                pm = np.roll(m, tuple(rng.integers(-2, 3, 2)), axis=(0, 1))
                pr = mask_utils.encode(np.asfortranarray(pm))
                pred.instances.append(EvalInstance(key, c, tuple(mask_utils.toBbox(pr).tolist()),
                                                   {"size": pr["size"], "counts": pr["counts"].decode()}, False,
                                                   float(rng.uniform(0.3, 1.0))))
        for _ in range(3):
            m = np.zeros((h, w), np.uint8)
            x, y = rng.integers(0, w - 40, 2)
            m[y:y + 20, x:x + 20] = 1
            r = mask_utils.encode(np.asfortranarray(m))
            pred.instances.append(EvalInstance(key, classes[int(rng.integers(0, 10))], tuple(mask_utils.toBbox(r).tolist()),
                                               {"size": r["size"], "counts": r["counts"].decode()}, False,
                                               float(rng.uniform(0.0, 0.6))))
    return gt, pred


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=5000)
    args = p.parse_args()
    from grounded_sam.evaluation import evaluate
    from grounded_sam.evaluation.coco_ap import coco_ap
    from grounded_sam.evaluation.operating import per_class_counts
    from grounded_sam.evaluation.sa_co import sa_co_metrics

    t = time.perf_counter()
    gt, pred = make(args.images)
    print(f"made {len(gt.images)} images, {len(gt.instances)} gt, {len(pred.instances)} predictions "
          f"in {time.perf_counter() - t:.1f} s")
    parts = {}
    for name, fn in (("coco segm", lambda: coco_ap(gt, pred, "segm")), ("coco bbox", lambda: coco_ap(gt, pred, "bbox")),
                     ("sa_co segm", lambda: sa_co_metrics(gt, pred, "segm")),
                     ("sa_co bbox", lambda: sa_co_metrics(gt, pred, "bbox")),
                     ("per class", lambda: per_class_counts(gt, pred, "segm"))):
        t = time.perf_counter()
        fn()
        parts[name] = time.perf_counter() - t
        print(f"{name:>10}: {parts[name]:6.1f} s")
    t = time.perf_counter()
    report = evaluate(gt, pred)
    print(f"evaluate: {time.perf_counter() - t:.1f} s (mask AP {report.ap:.3f}, cgF1 {report.cgf1:.1f})")


if __name__ == "__main__":
    main()
