"""ONNX Runtime fp32 vs our PyTorch (issue 29): ``set_image`` + one box ``predict`` per image.

SAM 2.1 Hiera-T on random weights at ``--size`` (default 1024), exported with
:func:`segmenter.export.to_onnx` into a temporary folder; both predictors on the CPU with
``--threads`` threads (torch intra-op threads, ONNX Runtime intra-op threads), runs interleaved,
median of ``--repeats``. Also reports the export time and the largest difference of the outputs.

    python bench/bench_onnx.py --size 1024 --repeats 3
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from common import interleaved, mosaic, parser, report, setup


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    setup(args)
    from segmenter import ImagePredictor, build_sam
    from segmenter.export import OnnxImagePredictor, to_onnx

    rows = []
    for size in args.size:
        model = build_sam("sam2.1_hiera_tiny", device="cpu", image_size=size)
        pt = ImagePredictor(model)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            to_onnx(model, Path(tmp) / "onnx")
            export_s = time.perf_counter() - t0
            ort = OnnxImagePredictor(Path(tmp) / "onnx", threads=args.threads)
            image = mosaic(720, 1280)
            box = np.array([200.0, 100.0, 900.0, 600.0])

            def run(p, image=image, box=box, **kw):
                return lambda: (p.set_image(image), p.predict(box=box, multimask_output=False, **kw))

            t = interleaved({"torch": run(pt), "ort": run(ort)}, args.repeats, args.warmup)
            a, b = run(pt, return_logits=True)()[1], run(ort, return_logits=True)()[1]
            diff = max(float(np.abs(x - y).max()) for x, y in zip(a, b))
            flipped = (a[0] > 0) != (b[0] > 0)
            near = f" (abs logit <= {np.abs(a[0][flipped]).max():.1e})" if flipped.any() else ""
        rows.append([size, t["torch"] * 1000, t["ort"] * 1000, t["ort"] / t["torch"], export_s, f"{diff:.1e}",
                     f"{int(flipped.sum())} of {flipped.size}{near}"])
    report(
        "ONNX Runtime vs PyTorch: set_image + 1 box (SAM 2.1 Hiera-T, random weights, 720x1280 image)",
        ["size", "torch ms", "ORT ms", "ORT/torch", "export s", "max abs diff (logits, iou, low-res)", "mask pixels differing"],
        rows, args,
        notes=[f"onnxruntime {__import__('onnxruntime').__version__}, fp32, CPUExecutionProvider"],
    )


if __name__ == "__main__":
    main()
