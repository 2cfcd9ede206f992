"""(p) Tiled detection's cost (issue 28): time per tile at detector batch 8 vs batch 1, and seconds per
megapixel of a whole prediction tiled vs untiled.

With the tiny random OWLv2 + SAM 2.1-T of the test suite (256 px SAM) on CPU: ``--tiles`` random
tiles of the detector's input size (64 px here; ``tile="auto"``) and of ``--tile`` px through
``detector.detect`` at ``batch_size`` 1 and 8 (median of ``--repeats``); then ``Pipeline.predict`` on a random ``--height`` x ``--width`` image with and
without ``tile`` (detection, merge and segmentation of the merged boxes on the whole image).

    python bench/bench_tiling.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=32)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--height", type=int, default=1536)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import torch

    from detectors import load_detector
    from grounded_sam import GroundedSAM
    from grounded_sam.pipeline.tiling import detector_input_side, tile_windows
    from tiny import SAM_IMAGE_SIZE, save_tiny_owlv2, save_tiny_sam

    torch.set_num_threads(max(1, torch.get_num_threads()))
    ontology = {"a cat": "cat", "a dog": "dog"}
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        owl = save_tiny_owlv2(Path(tmp) / "owl")
        sam = save_tiny_sam(Path(tmp))
        first = load_detector("owlv2", model_id=str(owl), device="cpu", batch_size=1, box_threshold=0.0)
        side = detector_input_side(first)
        # tiles at the detector's own input size (what tile="auto" cuts) and at --tile; larger tiles
        # spend their time in the processor's anti-aliasing blur before its resize, not in the model
        for tile in dict.fromkeys((side, args.tile)):
            tiles = [rng.integers(0, 255, (tile, tile, 3), dtype=np.uint8) for _ in range(args.tiles)]
            per_tile = {}
            for batch in (1, 8):
                det = load_detector("owlv2", model_id=str(owl), device="cpu", batch_size=batch, box_threshold=0.0)
                per_tile[batch] = _median_seconds(lambda det=det: det.detect(tiles, ontology), args.repeats) / len(tiles)
            print(f"detector input side: {side} px; {args.tiles} tiles of {tile} px: " + ", ".join(
                f"batch {b}: {1000 * s:.2f} ms per tile" for b, s in per_tile.items())
                + f"; batch 8 / batch 1: {per_tile[8] / per_tile[1]:.2f}")

        gs = GroundedSAM(ontology, detector=str(owl), segmenter="sam2.1_hiera_tiny", checkpoint=sam,
                         image_size=SAM_IMAGE_SIZE, device="cpu", box_threshold=0.1,
                         detector_options={"batch_size": 8})
        image = rng.integers(0, 255, (args.height, args.width, 3), dtype=np.uint8)
        megapixels = args.height * args.width / 1e6
        n_tiles = len(tile_windows((args.height, args.width), args.tile, 0.2))
        untiled = _median_seconds(lambda: gs.predict(image), args.repeats)
        tiled = _median_seconds(lambda: gs.predict(image, tile=args.tile, overlap=0.2), args.repeats)
        found = (len(gs.predict(image)), len(gs.predict(image, tile=args.tile, overlap=0.2)))
        print(f"{args.width} x {args.height} ({megapixels:.2f} MP), tile {args.tile} overlap 0.2: {n_tiles} tiles; "
              f"detections untiled {found[0]}, tiled {found[1]}")
        print(f"untiled: {untiled / megapixels:.3f} s/MP; tiled: {tiled / megapixels:.3f} s/MP "
              f"({tiled / untiled:.1f} x)")


if __name__ == "__main__":
    main()
