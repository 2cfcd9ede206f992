"""(e) Grounded pipeline end to end per image, tiny random OWLv2 + SAM 2.1 tiny: batch 1 vs batch 8.

Batch 1 is ``predict`` on each image in turn; batch 8 is one ``predict_batch`` of 8 images.
``box_threshold=0`` so that the random detector finds boxes for the segmenter to decode.
No reference (the reference has no grounded pipeline).

    python bench/bench_pipeline.py --size 1024 --repeats 3
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

import common


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], size=1024, repeats=3)
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args()
    if args.quick:
        args.size, args.repeats, args.batch = [256], 1, 2
    device = common.setup(args)
    from tiny import save_tiny_owlv2, save_tiny_sam

    from grounded_sam import GroundedSAM

    tmp = Path(tempfile.mkdtemp())
    owl = save_tiny_owlv2(tmp / "owl")
    sam = save_tiny_sam(tmp)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(args.batch)]
    rows = []
    for size in args.size:
        gs = GroundedSAM({"a dog": "dog", "a cat": "cat"}, detector=str(owl), segmenter="sam2.1_hiera_tiny",
                         checkpoint=str(sam), image_size=size, device=str(device), box_threshold=0.0, nms_iou=0.3)
        n_det = sum(len(gs.predict(im)) for im in images)

        def one_by_one() -> None:
            with common.amp(device):
                for im in images:
                    gs.predict(im)

        def batched() -> None:
            with common.amp(device):
                gs.predict_batch(images)

        t = common.interleaved({"b1": one_by_one, "bN": batched}, args.repeats, args.warmup, device)
        per1, perN = t["b1"] / len(images), t["bN"] / len(images)
        rows.append([size, len(images), n_det / len(images), per1 * 1e3, perN * 1e3, perN / per1, 1 / per1, 1 / perN])
    common.report(
        "(e) grounded pipeline per image, tiny OWLv2 + sam2.1_hiera_tiny (random)",
        ["size", "images", "detections/image", "batch 1 ms/image", f"batch {args.batch} ms/image", "batched/single",
         "batch 1 images/s", f"batch {args.batch} images/s"],
        rows, args,
    )


if __name__ == "__main__":
    main()
