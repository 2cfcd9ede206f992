"""SAM 3 decode of 8 captions on one image's features (full default config, random weights,
1008 px), interleaved A/B: the mask decoder for every prompt vs only for prompts that kept a
query, and 8 prompts per forward vs 1 (the CPU default). The image side runs once, untimed::

    python bench/bench_sam3_decode.py [--model-dir FOLDER] [--repeats 2]

``--model-dir``: a saved full SAM 3 (``bench_sam3_image.py --model full`` builds the same one).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

import detectors.sam3 as sam3  # noqa: E402
from detectors import load_detector  # noqa: E402

CAPTIONS = ["a cat", "the dog", "a person", "red car", "remote control", "a bird", "green tree", "a cup"]


class _EveryPrompt:
    """The plain forward: transformers runs the mask decoder for every prompt."""

    def __init__(self, model: object) -> None:
        self.inputs: dict = {}

    def __enter__(self) -> _EveryPrompt:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", default=None)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threshold", type=float, default=0.5)
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.model_dir
        if folder is None:
            from bench_sam3_image import build

            torch.manual_seed(0)
            folder = build("full", Path(tmp))
        det = load_detector("sam3", model_id=folder, device="cpu", box_threshold=args.threshold)
        image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
        det.text_features(CAPTIONS)
        with torch.inference_mode():
            vision = det.encode_images([Image.fromarray(image)])
        deferred = sam3._DeferredMaskHead
        variants = {  # name -> (mask head, prompts per forward, captions)
            "8 per forward, masks for every prompt": (_EveryPrompt, 8, CAPTIONS),
            "8 per forward, masks where kept": (deferred, 8, CAPTIONS),
            "1 per forward, masks where kept": (deferred, 1, CAPTIONS),
            "1 caption": (deferred, 1, CAPTIONS[:1]),
        }
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.repeats):
            for name, (head, per_forward, texts) in variants.items():
                sam3._DeferredMaskHead, det.captions_per_pass = head, per_forward
                start = time.perf_counter()
                with torch.inference_mode():
                    raw = det.decode_prompts(vision, 0, texts, (640, 480), min_score=args.threshold)
                times[name].append(time.perf_counter() - start)
                print(f"{name}: {times[name][-1]:.1f} s ({len(raw)} queries kept)", flush=True)
        sam3._DeferredMaskHead = deferred
    for name, ts in times.items():
        print(f"median  {name:<40} {np.median(ts):.1f} s")


if __name__ == "__main__":
    main()
