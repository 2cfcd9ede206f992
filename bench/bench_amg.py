"""(d) Automatic mask generation, 32x32 points on a 1024x1024 image, ours vs the reference.

Same random weights and image (a mosaic of 36 flat shapes, 3:4 aspect). On random weights the
default quality thresholds and box NMS keep almost nothing (one mask), so they are relaxed
(``--pred-iou 0.4 --stability 0.2 --box-nms 1.0``, as in the parity tests) to leave hundreds of
masks to score, filter and encode; the two mask sets are compared (pixel-identical masks).

    python bench/bench_amg.py --size 1024 --repeats 3
"""

from __future__ import annotations

import hashlib
import tempfile

import numpy as np
import torch

import common


def _keys(masks: list[dict]) -> set[str]:
    return {hashlib.sha1(np.ascontiguousarray(m["segmentation"]).tobytes()).hexdigest() for m in masks}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], size=1024, repeats=3)
    p.add_argument("--model", default="sam2.1_hiera_tiny")
    p.add_argument("--points", type=int, default=32, help="points per side")
    p.add_argument("--pred-iou", type=float, default=0.4)
    p.add_argument("--stability", type=float, default=0.2)
    p.add_argument("--box-nms", type=float, default=1.0)
    args = p.parse_args()
    if args.quick:
        args.size, args.repeats, args.points = [256], 1, 8
    device = common.setup(args)
    from segmenter import AutomaticMaskGenerator, build_sam

    rows = []
    tmp = tempfile.TemporaryDirectory()
    for size in args.size:
        image = common.mosaic(size * 3 // 4, size)
        kw = dict(points_per_side=args.points, pred_iou_thresh=args.pred_iou, stability_score_thresh=args.stability,
                  box_nms_thresh=args.box_nms)
        path, ref_model = common.random_checkpoint(args.model, size, tmp.name, score_bias=0.0)
        model = build_sam(args.model, checkpoint=str(path), device=device, image_size=size)
        ours = AutomaticMaskGenerator(model, **kw)
        out: dict[str, list] = {}

        def run(name: str, gen) -> None:
            with torch.inference_mode(), common.amp(device):
                out[name] = gen.generate(image)

        fns = {"ours": lambda: run("ours", ours)}
        if not args.no_reference:
            from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

            ref = SAM2AutomaticMaskGenerator(ref_model.to(device), **kw)
            s = size
            ref.predictor._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
            fns["ref"] = lambda: run("ref", ref)
        t = common.interleaved(fns, args.repeats, args.warmup, device)
        n_o = len(out["ours"])
        n_r = len(out["ref"]) if "ref" in out else "-"
        same = len(_keys(out["ours"]) & _keys(out["ref"])) if "ref" in out else "-"
        rows.append([size, args.points**2, t["ours"], t.get("ref", 0) or "-", common.ratio(t["ours"], t.get("ref")),
                     n_o, n_r, same])
    common.report(
        f"(d) AMG {args.points}x{args.points} points, {args.model}",
        ["size", "points", "ours s", "ref s", "ours/ref", "ours masks", "ref masks", "identical masks"],
        rows, args, [f"image {size * 3 // 4}x{size} mosaic of 36 shapes; pred_iou_thresh={args.pred_iou}, "
                     f"stability_score_thresh={args.stability}, box_nms_thresh={args.box_nms} (random weights)",
                     "goal: ours/ref <= 0.5 with the same mask set"],
    )


if __name__ == "__main__":
    main()
