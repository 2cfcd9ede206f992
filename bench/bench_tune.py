"""(o) Threshold tuning's cost: the one model pass at the floor vs a labeling pass, and the sweep.

With the tiny random OWLv2 + SAM 2.1-T (the test suite's checkpoints, 256 px) on N synthetic
images: ``predict_batch`` at the pipeline's own threshold (what labeling runs) against the same at
the tuning floor (what ``tune`` runs once), each timed on the same images in one process. The sweep
alone is timed on synthetic outcomes: 1,000 images x 10 classes x ~20 candidates per class and
image. Goals (issue 26): the pass <= 1.1 x a labeling pass; the sweep < 1 s per 1,000 images x 10
classes.

    python bench/bench_tune.py --images 16
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def sweep_seconds(images: int = 1000, classes: int = 10, per_image: int = 20) -> float:
    from grounded_sam.evaluation.operating import ClassOutcomes
    from grounded_sam.evaluation.tune import best_threshold, parse_objective

    rng = np.random.default_rng(0)
    outcomes = []
    for _ in range(classes):
        n = images * per_image
        scores = np.sort(rng.random(n))[::-1]
        outcomes.append(ClassOutcomes(scores, rng.random(n) < scores, int(n * 0.6)))
    goal = parse_objective("f1")
    start = time.perf_counter()
    for o in outcomes:
        best_threshold(o, goal)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--floor", type=float, default=0.05)
    p.add_argument("--threshold", type=float, default=0.3)
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    from grounded_sam import GroundedSAM
    from grounded_sam.assets.samples import SyntheticScene
    from grounded_sam.evaluation.tune import candidate_pass
    from tiny import SAM_IMAGE_SIZE, save_tiny_owlv2, save_tiny_sam

    root = Path(tempfile.mkdtemp())
    (root / "owl").mkdir()
    owl, sam = save_tiny_owlv2(root / "owl"), save_tiny_sam(root)
    gs = GroundedSAM({"a red rectangle": "rectangle", "a green ellipse": "ellipse"}, detector=str(owl),
                     segmenter="sam2.1_hiera_tiny", checkpoint=sam, image_size=SAM_IMAGE_SIZE, device="cpu",
                     box_threshold=args.threshold)
    frames = [SyntheticScene((240, 320), objects=3, seed=i).frame(0) for i in range(args.images)]
    gs.predict_batch(frames[:1])  # warm-up
    times = {"label": [], "tune": []}
    found = {"label": 0, "tune": 0}
    for frame in frames:  # interleaved, one image at a time
        start = time.perf_counter()
        found["label"] += len(gs.predict(frame))
        times["label"].append(time.perf_counter() - start)
        with candidate_pass(gs, args.floor):
            start = time.perf_counter()
            found["tune"] += len(gs.predict(frame))
            times["tune"].append(time.perf_counter() - start)
    label, tune = (float(np.median(times[k])) for k in ("label", "tune"))
    print(f"{args.images} images: labeling pass {label * 1000:.0f} ms/image ({found['label']} instances), "
          f"tuning pass {tune * 1000:.0f} ms/image ({found['tune']} candidates): ratio {tune / label:.2f}")
    print(f"sweep, 1,000 images x 10 classes x 20 candidates: {sweep_seconds():.3f} s")


if __name__ == "__main__":
    main()
