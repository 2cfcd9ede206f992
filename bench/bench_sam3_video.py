"""SAM 3 concept tracking: ``Sam3ConceptTracker`` vs transformers' streaming example loop, per frame.

Both run the same random ``Sam3VideoModel`` on the same synthetic frames with the same captions
in one session: transformers' loop (``processor(images=frame)``, ``model(session, frame=...)``,
``processor.postprocess_outputs``; the session keeps everything) and ours (lazy frames, the same
calls, the session pruned after every frame, ``sv.Detections`` built). Reported: the median
seconds per frame (median of the repeats), the mean over the last 10 frames (transformers deep-copies
per-frame records on every frame, so its cost creeps up with the video's length), and the tensor
bytes the session holds at the end.

``--model tiny`` is the test suite's toy model (``tests/test_sam3_tracking.py``, 112 px, ~4.7M
parameters). ``--model full`` is the default ``Sam3VideoConfig`` on random weights at
``--size`` (1008: one frame takes minutes on a CPU; random weights rarely detect anything, so it
times the image side and the prompts, not the tracker):

    python bench/bench_sam3_video.py --frames 60 --repeats 3 --no-save
    python bench/bench_sam3_video.py --model full --size 1008 --frames 2 --repeats 1 --warmup 0 --no-save
"""

from __future__ import annotations

import time

import numpy as np
import torch

import common

CAPTIONS = ["a cat", "a dog", "red car"]


def tiny_model() -> tuple[torch.nn.Module, object]:
    from tiny_detectors import tiny_sam3_video  # the suite's toy model, biased to track

    from test_sam3_tracking import PARITY, WINDOW

    return tiny_sam3_video(**WINDOW, **PARITY)


def full_model(size: int) -> tuple[torch.nn.Module, object]:
    from tiny_detectors import clip_tokenizer
    from transformers import Sam3ImageProcessor, Sam3VideoConfig, Sam3VideoModel, Sam3VideoProcessor
    from transformers.models.sam2_video.video_processing_sam2_video import Sam2VideoVideoProcessor

    config = Sam3VideoConfig()
    config.image_size = size
    config.low_res_mask_size = 4 * (size // 14)
    model = Sam3VideoModel(config).eval()
    masks = {"height": 4 * (size // 14), "width": 4 * (size // 14)}
    image = Sam3ImageProcessor(size={"height": size, "width": size}, mask_size=masks)
    video = Sam2VideoVideoProcessor(size={"height": size, "width": size})
    return model, Sam3VideoProcessor(image, video, clip_tokenizer(32), target_size=size)


def transformers_loop(model, processor, frames, device) -> tuple[list[float], int]:
    from grounded_sam.tracking.sam3_memory import tensor_bytes

    session = processor.init_video_session(inference_device=device)
    processor.add_text_prompt(session, CAPTIONS)
    times = []
    with common.amp(device):
        for frame in frames:
            t0 = time.perf_counter()
            inputs = processor(images=frame, device=device, return_tensors="pt")
            out = model(inference_session=session, frame=inputs.pixel_values[0])
            processor.postprocess_outputs(session, out, original_sizes=inputs.original_sizes)
            common.sync(device)
            times.append(time.perf_counter() - t0)
    return times, tensor_bytes(session)


def ours_loop(tracker, frames, device) -> tuple[list[float], int]:
    from grounded_sam.tracking.sam3_memory import tensor_bytes

    times, nbytes = [], 0
    t0 = time.perf_counter()
    for t, _, _ in tracker.frames(iter(frames)):
        common.sync(device)
        times.append(time.perf_counter() - t0)
        if t == len(frames) - 1:
            nbytes = tensor_bytes(tracker.session)
        t0 = time.perf_counter()
    return times, nbytes


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], size=1008, repeats=3)
    p.add_argument("--model", choices=["tiny", "full"], default="tiny")
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--hw", type=int, nargs=2, default=[480, 640], help="video frame height and width")
    args = p.parse_args()
    device = common.setup(args)
    from grounded_sam.assets.samples import SyntheticScene
    from grounded_sam.tracking.sam3 import Sam3ConceptTracker

    t0 = time.perf_counter()
    model, processor = tiny_model() if args.model == "tiny" else full_model(args.size[0])
    build_s = time.perf_counter() - t0
    model = model.to(device)
    frames = list(SyntheticScene(tuple(args.hw), objects=3, seed=1).frames(args.frames))
    tracker = Sam3ConceptTracker({c: c.split()[-1] for c in CAPTIONS}, model_id=(model, processor), device=device)
    runs = {"transformers loop": lambda: transformers_loop(model, processor, frames, device),
            "ours (bounded memory)": lambda: ours_loop(tracker, frames, device)}
    for _ in range(args.warmup):
        for fn in runs.values():
            fn()
    results: dict[str, list[tuple[list[float], int]]] = {k: [] for k in runs}
    for r in range(args.repeats):  # interleaved, the order alternating: a loaded machine slows both alike
        for name, fn in list(runs.items())[:: 1 if r % 2 == 0 else -1]:
            results[name].append(fn())
    rows = []
    for name, res in results.items():
        per_frame = float(np.median([np.median(times) for times, _ in res]))
        tail = float(np.median([np.mean(times[-10:]) for times, _ in res]))
        rows.append([name, args.frames, per_frame, tail, res[-1][1] / 2**20])
    ref, ours = rows[0][2], rows[1][2]
    common.report(
        f"SAM 3 concept tracking, {args.model} model, {len(CAPTIONS)} captions",
        ["implementation", "frames", "s/frame (median)", "s/frame (mean of last 10)", "session tensors MB"],
        rows,
        args,
        notes=[f"model built in {build_s:.1f} s; {args.hw[0]}x{args.hw[1]} frames; ours/transformers = {ours / ref:.3f}"],
    )


if __name__ == "__main__":
    main()
