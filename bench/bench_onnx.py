"""ONNX Runtime fp32 vs our PyTorch (issue 29): ``set_image`` + one box ``predict`` per image.

SAM 2.1 Hiera-T on random weights at ``--size`` (default 1024), exported with
:func:`segmenter.export.to_onnx` into a temporary folder; both predictors on the CPU with
``--threads`` threads (torch intra-op threads, ONNX Runtime intra-op threads), runs interleaved,
median of ``--repeats``. Also reports the export time and the largest difference of the outputs.

    python bench/bench_onnx.py --size 1024 --repeats 3

``--click``: prompt -> mask latency on a cached embedding (:func:`bench_click`); ``--int8``: the int8
image encoder against fp32 and Meta's reference PyTorch (:func:`bench_int8`); ``--video``: per-frame
time of video tracking, ONNX Runtime vs our PyTorch tracker (:func:`bench_video`).
"""

from __future__ import annotations

import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
from common import interleaved, mosaic, parser, report, setup


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--click", action="store_true", help="click latency of the ONNX decoder on a cached embedding")
    p.add_argument("--int8", action="store_true", help="set_image + 1 box: ORT int8 vs fp32 vs Meta's reference")
    p.add_argument("--video", action="store_true", help="video tracking per frame: ORT vs our PyTorch tracker")
    p.add_argument("--objects", type=int, default=8, help="--video: objects tracked")
    p.add_argument("--frames", type=int, default=8, help="--video: frames of the clip (the first is prompted)")
    args = p.parse_args()
    setup(args)
    if args.video:
        return bench_video(args)
    if args.click:
        return bench_click(args)
    if args.int8:
        return bench_int8(args)
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


def _random_export(size: int, folder: Path):
    """Meta's reference SAM 2.1 Hiera-T on random weights, ours loaded from the same weights, and
    ours exported (fp32) into ``folder/fp32``: ``(reference model, our model, export folder)``."""
    from common import random_checkpoint

    from segmenter import build_sam
    from segmenter.export import to_onnx

    path, ref_model = random_checkpoint("sam2.1_hiera_tiny", size, folder, score_bias=0.0)
    model = build_sam("sam2.1_hiera_tiny", checkpoint=str(path), device="cpu", image_size=size)
    to_onnx(model, folder / "fp32")
    return ref_model, model, folder / "fp32"


def bench_click(args) -> None:
    """Prompt -> mask on a cached embedding (the app's click): the ONNX decoder + numpy upscale to
    a 720x1280 image, next to our PyTorch predictor and Meta's on the same weights and embedding."""
    from common import reference_image_predictor

    from segmenter import ImagePredictor
    from segmenter.export import OnnxImagePredictor

    repeats = max(args.repeats, 20)
    image = mosaic(720, 1280)
    point, labels = np.array([[640.0, 360.0]]), np.array([1])
    box = np.array([200.0, 100.0, 900.0, 600.0])
    rows = []
    for size in args.size:
        with tempfile.TemporaryDirectory() as tmp:
            ref_model, model, folder = _random_export(size, Path(tmp))
            predictors = {"ORT": OnnxImagePredictor(folder, threads=args.threads), "ours torch": ImagePredictor(model)}
            if not args.no_reference:
                predictors["Meta reference"] = reference_image_predictor(ref_model)
            for p in predictors.values():
                p.set_image(image)
            _, iou, low = predictors["ORT"].predict(point_coords=point, point_labels=labels)
            prev = low[int(np.argmax(iou))][None]
            prompts = {
                "1 click (3 masks)": {"point_coords": point, "point_labels": labels},
                "2nd click + previous mask (1 mask)": {"point_coords": np.array([[640.0, 360.0], [500.0, 300.0]]),
                                                          "point_labels": np.array([1, 0]), "mask_input": prev,
                                                          "multimask_output": False},
                "box (1 mask)": {"box": box, "multimask_output": False},
            }
            for what, kw in prompts.items():  # the predictors' runs interleaved: a loaded machine slows all alike
                times = interleaved({name: partial(p.predict, **kw) for name, p in predictors.items()}, repeats, 3)
                rows.append([size, what, *(times[n] * 1e3 for n in predictors)])
            general = OnnxImagePredictor(folder, threads=args.threads)
            general.set_image(image)
            general._side = {}  # every prompt through mask_decoder.onnx, as exports before decoder_cache
            low_only = interleaved({"low": partial(predictors["ORT"].predict_low_res, point, labels),
                                    "general": partial(general.predict_low_res, point, labels),
                                    "full": partial(predictors["ORT"].predict, point_coords=point, point_labels=labels)},
                                   repeats, 3)
            what = (f"1 click: decoder only, low-res logits (vs {low_only['full'] * 1e3:.0f} ms with its 3 masks "
                    f"upscaled, and {low_only['general'] * 1e3:.1f} ms through mask_decoder.onnx without the "
                    "per-image cache; interleaved)")
            rows.append([size, what, low_only["low"] * 1e3, "-", "-"][: 2 + len(predictors)])
    report(
        "ONNX Runtime click latency: prompt -> mask on a cached embedding (SAM 2.1 Hiera-T, random weights, "
        "720x1280 image)",
        ["size", "prompt", *(f"{n} ms" for n in predictors)], rows, args,
        notes=[(f"onnxruntime {__import__('onnxruntime').__version__}, fp32, CPUExecutionProvider; median of {repeats}; "
               "masks upscaled to the image (720x1280) included; goal: ORT <= 50 ms")],
    )


def bench_int8(args) -> None:
    """``set_image`` + one box: ORT with the int8 image encoder (``--quantize int8``) and fp32, our
    PyTorch and Meta's reference predictor, runs interleaved; the int8 export's own accuracy report."""
    import shutil

    from common import interleaved, reference_image_predictor

    from segmenter import ImagePredictor
    from segmenter.export import OnnxImagePredictor
    from segmenter.export.quantize import convert_precision

    image = mosaic(720, 1280)
    box = np.array([200.0, 100.0, 900.0, 600.0])
    rows = []
    for size in args.size:
        with tempfile.TemporaryDirectory() as tmp:
            ref_model, model, fp32 = _random_export(size, Path(tmp))
            int8 = shutil.copytree(fp32, Path(tmp) / "int8")
            t0 = time.perf_counter()
            manifest, acc = convert_precision(int8, quantize="int8")
            convert_s = time.perf_counter() - t0
            mb = [(f / g.file).stat().st_size / 2**20 for f, g in ((fp32, OnnxImagePredictor(fp32).manifest.graphs["image_encoder"]),
                                                                  (int8, manifest.graphs["image_encoder"]))]
            predictors = {"ref": reference_image_predictor(ref_model), "torch": ImagePredictor(model),
                          "fp32": OnnxImagePredictor(fp32, threads=args.threads),
                          "int8": OnnxImagePredictor(int8, threads=args.threads)}

            def run(p):
                return lambda: (p.set_image(image), p.predict(box=box, multimask_output=False))

            t = interleaved({k: run(p) for k, p in predictors.items()}, args.repeats, args.warmup)
            masks = {k: predictors[k].predict(box=box, multimask_output=False)[0][0] > 0 for k in ("fp32", "int8")}
            union = (masks["fp32"] | masks["int8"]).sum()
            box_iou = (masks["fp32"] & masks["int8"]).sum() / union if union else 1.0
        rows.append([size, t["ref"] * 1e3, t["torch"] * 1e3, t["fp32"] * 1e3, t["int8"] * 1e3, t["fp32"] / t["ref"],
                     t["int8"] / t["ref"], t["int8"] / t["fp32"], f"{acc.mean_iou:.4f} / {acc.min_iou:.4f}",
                     f"{box_iou:.4f}", f"{mb[0]:.0f} -> {mb[1]:.0f}", convert_s])
    report(
        "ONNX Runtime int8 image encoder: set_image + 1 box vs fp32 and Meta's reference (SAM 2.1 Hiera-T, "
        "random weights, 720x1280 image)",
        ["size", "Meta ref ms", "ours torch ms", "ORT fp32 ms", "ORT int8 ms", "fp32/ref", "int8/ref", "int8/fp32",
         "int8 mask IoU vs fp32 (export report: mean / min)", "IoU, this box", "encoder MB", "convert + report s"],
        rows, args,
        notes=[(f"onnxruntime {__import__('onnxruntime').__version__}, CPUExecutionProvider, intra-op threads "
               f"{args.threads}; int8: onnxruntime.quantization.quantize_dynamic (QInt8 weights) of the image encoder")],
    )


def bench_video(args) -> None:
    """Per-frame time of ``propagate_in_video``: ``--objects`` boxes prompted on frame 0 of a
    ``--frames`` clip (a 480x640 mosaic drifting 6 px per frame), tracked by our PyTorch
    ``VideoPredictor`` and by ``OnnxVideoPredictor`` (fifo memory), runs interleaved; each run is a
    fresh session. Also the largest logit difference over all frames."""
    import torch

    from segmenter import VideoPredictor, build_sam
    from segmenter.export import OnnxVideoPredictor, to_onnx

    base = mosaic(480, 700)
    clip = [np.ascontiguousarray(base[:, 6 * t : 6 * t + 640]) for t in range(args.frames)]
    rng = np.random.default_rng(0)
    xy = rng.uniform([0, 0], [480, 320], (args.objects, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(60, 160, (args.objects, 2))], axis=1)
    rows = []
    for size in args.size:
        torch.manual_seed(0)
        model = build_sam("sam2.1_hiera_tiny", device="cpu", image_size=size)
        with torch.no_grad():  # random weights: keep the objects "present" so that every step does its work
            model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(2.0)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            to_onnx(model, Path(tmp) / "onnx", parts=("image", "video"))
            export_s = time.perf_counter() - t0
            predictors = {"torch": VideoPredictor(model), "ort": OnnxVideoPredictor(Path(tmp) / "onnx", threads=args.threads)}
            per_frame: dict[str, list[float]] = {k: [] for k in predictors}
            last: dict[str, list[np.ndarray]] = {}
            for rep in range(args.warmup + args.repeats):
                for name, p in predictors.items():
                    state = p.init_state(clip)
                    for i, box in enumerate(boxes):
                        p.add_new_points_or_box(state, 0, i, box=box)
                    masks, stamps = [], [time.perf_counter()]
                    for _, _, m in p.propagate_in_video(state):
                        stamps.append(time.perf_counter())
                        masks.append(np.asarray(m))
                    if rep >= args.warmup:  # tracked frames only (frame 0 is the prompted one)
                        per_frame[name] += list(np.diff(stamps)[1:])
                    last[name] = masks
            a, b = np.stack(last["torch"]), np.stack(last["ort"])  # (T, N, 1, H, W)
            diff = float(np.abs(a - b).max())
            flipped = (a > 0) != (b > 0)
            near = f" (abs logit <= {np.abs(a[flipped]).max():.1e})" if flipped.any() else ""
        t = {k: float(np.median(v)) for k, v in per_frame.items()}
        rows.append([size, args.objects, args.frames, t["torch"] * 1e3, t["ort"] * 1e3, t["ort"] / t["torch"], export_s,
                     f"{diff:.1e}", f"{int(flipped.sum())} of {flipped.size}{near}"])
    report(
        "ONNX Runtime vs PyTorch: video tracking per frame (SAM 2.1 Hiera-T, random weights, 480x640 clip)",
        ["size", "objects", "frames", "torch ms/frame", "ORT ms/frame", "ORT/torch", "export s",
         "max abs diff (logits, all frames)", "mask pixels differing"],
        rows, args,
        notes=[(f"onnxruntime {__import__('onnxruntime').__version__}, fp32, CPUExecutionProvider; median over the "
                f"tracked frames of {args.repeats} run(s); fifo memory; torch: our VideoPredictor (oneDNN GEMMs)")],
    )


if __name__ == "__main__":
    main()
