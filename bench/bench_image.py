"""(a) Image: ``set_image`` + ``predict(box=...)`` per model, ours vs the reference.

Same random weights (the reference's, loaded into ours through ``build_sam``), same image,
fp32 CPU (bf16 autocast on CUDA). Also reports the image encoder's FLOPs (torch's flop counter)
and our achieved GFLOP/s next to the measured matmul rate and the CPU's theoretical peak.

    python bench/bench_image.py --size 1024 --models sam2.1_hiera_tiny sam2.1_hiera_small
"""

from __future__ import annotations

import tempfile

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

import common


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["sam2.1_hiera_tiny", "sam2.1_hiera_small"])
    args = p.parse_args()
    if args.quick:
        args.size, args.repeats, args.models = [256], 1, args.models[:1]
    device = common.setup(args)
    from segmenter import ImagePredictor, build_sam

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    box = np.array([300, 200, 800, 600], dtype=np.float32)
    rows, notes = [], []
    peak, peak_how = common.theoretical_peak_gflops(args.threads)
    mm = common.matmul_gflops()
    notes.append(f"measured fp32 matmul (1024^3): {mm:.1f} GFLOP/s; theoretical fp32 peak: "
                 f"{peak:.0f} GFLOP/s ({peak_how})" if peak else f"matmul {mm:.1f} GFLOP/s")
    tmp = tempfile.TemporaryDirectory()
    for size in args.size:
        for name in args.models:
            path, ref_model = common.random_checkpoint(name, size, tmp.name, score_bias=0.0)
            model = build_sam(name, checkpoint=str(path), device=device, image_size=size)
            if args.compile:
                model.image_encoder = torch.compile(model.image_encoder)
            ours = ImagePredictor(model)

            def run(pred) -> None:
                with torch.inference_mode(), common.amp(device):
                    pred.set_image(image)
                    pred.predict(box=box, multimask_output=False)

            fns = {"ours": lambda: run(ours)}
            if not args.no_reference:
                ref = common.reference_image_predictor(ref_model.to(device))
                fns["ref"] = lambda: run(ref)
            t = common.interleaved(fns, args.repeats, args.warmup, device)
            # image encoder alone: FLOPs and achieved rate
            x = torch.randn(1, 3, size, size, device=device)
            with torch.inference_mode(), FlopCounterMode(display=False) as fc:
                model.image_encoder(x)
            flops = fc.get_total_flops()
            with torch.inference_mode(), common.amp(device):
                t_enc = common.median_time(lambda: model.image_encoder(x), args.repeats, args.warmup, device)
            gfs = flops / t_enc / 1e9
            rows.append([name, size, t["ours"] * 1e3, t.get("ref", 0) * 1e3 or "-",
                         common.ratio(t["ours"], t.get("ref")), 1 / t["ours"],
                         flops / 1e9, t_enc * 1e3, gfs, f"{gfs / mm:.0%}"])
            del ref_model
    common.report(
        "(a) image: set_image + predict(box)",
        ["model", "size", "ours ms", "ref ms", "ours/ref", "ours FPS", "encoder GFLOP", "encoder ms",
         "encoder GFLOP/s", "of matmul rate"],
        rows, args, notes + ["goal: ours/ref <= 0.9"],
    )


if __name__ == "__main__":
    main()
