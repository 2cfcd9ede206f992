"""Where the time of the exported SAM 2.1 Hiera-T goes (random weights, ``--size`` px, CPU, 1 thread):
ONNX Runtime's own profile of ``image_encoder.onnx`` and of the click decoders, summed by operator,
beside torch's profile of Meta's reference image encoder and the FLOPs of ours (torch's counter)::

    python bench/profile_onnx.py --size 1024

CPU seconds (``time.process_time``) are printed too: on one thread they are what the run cost, and a
machine shared with other work inflates them less than the wall clock.
"""

from __future__ import annotations

import collections
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import parser, setup


def main() -> None:
    p = parser(__doc__.splitlines()[0], repeats=2)
    args = p.parse_args()
    setup(args)
    from common import random_checkpoint
    from torch.utils.flop_counter import FlopCounterMode

    from segmenter import build_sam
    from segmenter.export import to_onnx

    size = args.size[0]
    with tempfile.TemporaryDirectory() as tmp:
        path, ref = random_checkpoint("sam2.1_hiera_tiny", size, Path(tmp), score_bias=0.0)
        ours = build_sam("sam2.1_hiera_tiny", checkpoint=str(path), device="cpu", image_size=size).eval()
        x = torch.rand(1, 3, size, size)
        with torch.inference_mode():
            counter = FlopCounterMode(display=False)
            with counter:
                ours.encode_images(x)
            ref.forward_image(x)
            start = time.process_time()
            for _ in range(args.repeats):
                ref.forward_image(x)
            ref_s = (time.process_time() - start) / args.repeats
            with torch.profiler.profile() as prof:
                ref.forward_image(x)
        flops = counter.get_flop_counts()["Global"]
        parts = ", ".join(f"{str(op).split('.')[-1]} {n / 1e9:.1f}" for op, n in flops.items())
        print(f"image encoder at {size} px: {counter.get_total_flops() / 1e9:.1f} GFLOP counted ({parts}; "
              "attention is not counted)")
        print(f"\nMeta's reference encoder: {ref_s * 1e3:.0f} ms CPU; by torch op (self CPU ms):")
        for row in sorted(prof.key_averages(), key=lambda r: -r.self_cpu_time_total)[:8]:
            print(f"  {row.key:55s} {row.self_cpu_time_total / 1e3:8.1f}")

        to_onnx(ours, Path(tmp) / "onnx")
        folder = Path(tmp) / "onnx"
        e = size // 16
        image = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
        _profile(folder / "image_encoder.onnx", {"image": image}, args.repeats, Path(tmp))
        feats = {"image_embed": np.random.rand(1, 256, e, e).astype(np.float32),
                 "high_res_feats_0": np.random.rand(1, 32, 4 * e, 4 * e).astype(np.float32),
                 "high_res_feats_1": np.random.rand(1, 64, 2 * e, 2 * e).astype(np.float32),
                 "point_coords": np.array([[[size / 2, size / 3]]], np.float32), "point_labels": np.array([[1]], np.int64)}
        side = _profile(folder / "decoder_cache.onnx", {"image_embed": feats["image_embed"]}, 20, Path(tmp))
        _profile(folder / "mask_decoder.onnx", {**feats, "mask_input": np.zeros((1, 1, 4 * e, 4 * e), np.float32),
                                                "has_mask_input": np.zeros(1, np.float32)}, 20, Path(tmp))
        _profile(folder / "mask_decoder_cached.onnx",
                 {**feats, **dict(zip(("t2i_keys", "t2i_values", "i2t_queries"), side))}, 20, Path(tmp))


def _profile(graph: Path, feeds: dict[str, np.ndarray], repeats: int, tmp: Path) -> list[np.ndarray]:
    """Run ``graph`` (one warm-up, then ``repeats`` profiled runs) and print its time by operator."""
    import onnxruntime as ort

    from segmenter.export.runtime import CPU_DISABLED_OPTIMIZERS

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(graph), opts, providers=["CPUExecutionProvider"],
                                   disabled_optimizers=list(CPU_DISABLED_OPTIMIZERS))
    out = session.run(None, feeds)
    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp / graph.stem)
    session = ort.InferenceSession(str(graph), opts, providers=["CPUExecutionProvider"],
                                   disabled_optimizers=list(CPU_DISABLED_OPTIMIZERS))
    session.run(None, feeds)  # warm-up
    start = time.process_time()
    for _ in range(repeats):
        session.run(None, feeds)
    cpu_ms = (time.process_time() - start) / repeats * 1e3
    by_op: dict[str, float] = collections.Counter()
    for event in json.loads(Path(session.end_profiling()).read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            by_op[event["args"]["op_name"]] += event["dur"] / 1e3 / (repeats + 1)
    total = sum(by_op.values())
    print(f"\n{graph.name}: {cpu_ms:.1f} ms CPU per run; kernels by operator (ms, share):")
    for op, ms in sorted(by_op.items(), key=lambda kv: -kv[1])[:8]:
        print(f"  {op:28s} {ms:8.1f}  {ms / total:5.1%}")
    return out


if __name__ == "__main__":
    main()
