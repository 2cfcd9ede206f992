"""(c) Peak RSS while tracking a synthetic 720p video file: N1 vs N2 frames, each run in its own process.

Ours opens the .mp4 lazily (``init_state(path)``); the reference loads every frame up front (its
design: its own loader wants a JPEG folder, so the frames are decoded with PyAV, preprocessed the
way ours are, and injected) and keeps every frame's outputs. One box per object on frame 0.
Peak RSS is ``ru_maxrss`` of the child process.

    python bench/bench_memory.py --size 256 --frames 100 600
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import common

H, W = 720, 1280


def child(impl: str, video: str, frames: int, size: int, ckpt: str, model_name: str, objects: int) -> None:
    torch.set_num_threads(1)
    from grounded_sam.assets.samples import SyntheticScene

    boxes = SyntheticScene((H, W), objects=objects, seed=0).boxes(0)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    # models are built outside inference_mode (ours caches on parameter version counters)
    if impl == "ours":
        from segmenter import VideoPredictor, build_sam

        pred = VideoPredictor(build_sam(model_name, checkpoint=ckpt, device="cpu", image_size=size), fill_hole_area=0)
    with torch.inference_mode():
        if impl == "ours":
            state = pred.init_state(video)
        else:
            import av
            import sam2.sam2_video_predictor as ref_video
            from sam2.build_sam import build_sam2_video_predictor

            from reference import REFERENCE_CONFIGS
            from segmenter.video.frames import preprocess_video_frame

            pred = build_sam2_video_predictor(REFERENCE_CONFIGS[model_name], ckpt, device="cpu",
                                              hydra_overrides_extra=[f"++model.image_size={size}"])
            pred.fill_hole_area = 0
            fwd = pred.memory_attention.forward
            pred.memory_attention.forward = lambda **kw: fwd(**{**kw, "memory": kw["memory"].float(),
                                                               "memory_pos": kw["memory_pos"].float()})
            with av.open(video) as c:
                imgs = [preprocess_video_frame(f.to_ndarray(format="rgb24"), size) for f in c.decode(video=0)]
            images = torch.stack(imgs[:frames])
            ref_video.load_video_frames = lambda **_: (images, H, W)
            state = pred.init_state("injected")
        model_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for i, b in enumerate(boxes):
            pred.add_new_points_or_box(state, 0, i + 1, box=b)
        n = 0
        for _ in pred.propagate_in_video(state, max_frame_num_to_track=frames - 1):
            n += 1
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"frames": n, "base_mb": base / 1024, "after_init_mb": model_rss / 1024,
                      "peak_mb": peak / 1024, "seconds": time.perf_counter() - t0}))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        a = sys.argv[2:]
        child(a[0], a[1], int(a[2]), int(a[3]), a[4], a[5], int(a[6]))
        return
    p = common.parser(__doc__.splitlines()[0], size=256, repeats=1)
    p.add_argument("--model", default="sam2.1_hiera_tiny")
    p.add_argument("--frames", type=int, nargs=2, default=[100, 600])
    p.add_argument("--objects", type=int, default=1)
    p.add_argument("--video", default=None, help="an existing video (default: write a synthetic 720p mp4)")
    args = p.parse_args()
    if args.quick:
        args.size, args.frames = [256], [10, 40]
    common.setup(args)
    from grounded_sam.assets.samples import write_synthetic_video

    tmp = tempfile.TemporaryDirectory()
    size = args.size[0]
    ckpt, _ = common.random_checkpoint(args.model, size, tmp.name, score_bias=2.0)
    video = args.video or str(Path(tmp.name) / "synthetic_720p.mp4")
    if args.video is None:
        write_synthetic_video(video, max(args.frames), size=(H, W), objects=args.objects, seed=0)
    impls = ["ours"] if args.no_reference else ["ours", "ref"]
    rows, peaks = [], {}
    for impl in impls:
        for n in args.frames:
            cmd = [sys.executable, __file__, "--child", impl, video, str(n), str(size), str(ckpt), args.model,
                   str(args.objects)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(out.stderr[-3000:], file=sys.stderr)
                rows.append([impl, n, "failed", "", "", "", ""])
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            peaks[(impl, n)] = r["peak_mb"]
            rows.append([impl, n, r["after_init_mb"], r["peak_mb"], r["peak_mb"] - r["after_init_mb"],
                         r["seconds"], ""])
    lo, hi = args.frames
    for row in rows:
        if (row[0], hi) in peaks and (row[0], lo) in peaks and row[1] == hi:  # row[1]: requested frames
            row[6] = f"{peaks[(row[0], hi)] / peaks[(row[0], lo)]:.3f}"
    common.report(
        f"(c) peak RSS tracking a synthetic {H}p video, {args.model} at {size}, {args.objects} object(s)",
        ["impl", "frames", "RSS after init MB", "peak RSS MB", "growth while tracking MB", "seconds",
         f"peak {hi} / peak {lo}"],
        rows, args, [f"goal: ours peak at {hi} frames <= 1.2 x at {lo} frames"],
    )


if __name__ == "__main__":
    main()
