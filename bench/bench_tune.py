"""(o) Threshold tuning's cost: the one model pass at the floor vs a labeling pass, and the sweep.

With the tiny random OWLv2 + SAM 2.1-T (the test suite's checkpoints, 256 px) on N synthetic
images: ``predict_batch`` at the pipeline's own threshold (what labeling runs) against the same at
the tuning floor (what ``tune`` runs once), each timed on the same images in one process. The sweep
alone is timed on synthetic outcomes: 1,000 images x 10 classes x ~20 candidates per class and
image. Goals (issue 26): the pass <= 1.1 x a labeling pass; the sweep < 1 s per 1,000 images x 10
classes.

``--search``: a caption search instead (2 classes, 3 captions each, all prompted in one pass):
the whole ``tune(candidates=...)`` (images read from disk, the pass, every caption set swept)
and a plain ``tune`` against a labeling pass over the same image files, alternating, median of
``--repeats``. Goal (issue 26): the search <= 1.5 x a labeling pass.

    python bench/bench_tune.py --images 16
    python bench/bench_tune.py --images 16 --search
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
    from grounded_sam.evaluation.objectives import best_threshold, parse_objective

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


def search_ratios(gs, frames: list[np.ndarray], floor: float, repeats: int) -> None:
    """Caption search and plain tune vs a labeling pass (module docs)."""
    from PIL import Image

    from grounded_sam.evaluation.data import EvalImage, EvalInstance, EvalSet
    from gsam_runtime.rle import encode_masks

    root = Path(tempfile.mkdtemp())
    gt = EvalSet(classes=["rectangle", "ellipse"], source="synthetic scenes")
    for i, (frame, scene) in enumerate(frames):
        key = f"img{i:03d}.png"
        Image.fromarray(frame).save(root / key)
        gt.images[key] = EvalImage(key, frame.shape[1], frame.shape[0])
        for obj, box, rle in zip(scene.objects, scene.boxes(0), encode_masks(scene.masks(0))):
            x1, y1, x2, y2 = (float(v) for v in box)
            gt.instances.append(EvalInstance(key, "rectangle" if obj.shape == "rect" else "ellipse",
                                             (x1, y1, x2 - x1 + 1, y2 - y1 + 1), dict(rle)))
    paths = [root / k for k in sorted(gt.images)]
    candidates = {"rectangle": ["a red box", "a square"], "ellipse": ["a green oval", "a circle"]}
    times: dict[str, list[float]] = {"label": [], "tune": [], "search": []}
    for _ in range(repeats):
        start = time.perf_counter()
        for path in paths:
            gs.predict_batch([path])
        times["label"].append(time.perf_counter() - start)
        start = time.perf_counter()
        gs.tune(gt, images=root, floor=floor)
        times["tune"].append(time.perf_counter() - start)
        start = time.perf_counter()
        result = gs.tune(gt, images=root, floor=floor, candidates=candidates)
        times["search"].append(time.perf_counter() - start)
    label, tune, search = (float(np.median(times[k])) for k in ("label", "tune", "search"))
    print(f"{len(paths)} images, median of {repeats}: labeling pass {label:.2f} s, tune {tune:.2f} s "
          f"(ratio {tune / label:.2f}), caption search over 3 captions per class {search:.2f} s "
          f"(ratio {search / label:.2f}; its model pass {result.seconds:.2f} s)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--floor", type=float, default=0.05)
    p.add_argument("--threshold", type=float, default=0.3)
    p.add_argument("--search", action="store_true", help="time a caption search (module docs)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    from grounded_sam import GroundedSAM
    from grounded_sam.assets.samples import SyntheticScene
    from grounded_sam.evaluation.candidates import candidate_pass
    from tiny import SAM_IMAGE_SIZE, save_tiny_owlv2, save_tiny_sam

    root = Path(tempfile.mkdtemp())
    (root / "owl").mkdir()
    owl, sam = save_tiny_owlv2(root / "owl"), save_tiny_sam(root)
    gs = GroundedSAM({"a red rectangle": "rectangle", "a green ellipse": "ellipse"}, detector=str(owl),
                     segmenter="sam2.1_hiera_tiny", checkpoint=sam, image_size=SAM_IMAGE_SIZE, device="cpu",
                     box_threshold=args.threshold)
    scenes = [SyntheticScene((240, 320), objects=3, seed=i) for i in range(args.images)]
    frames = [scene.frame(0) for scene in scenes]
    gs.predict_batch(frames[:1])  # warm-up
    if args.search:
        search_ratios(gs, list(zip(frames, scenes)), args.floor, args.repeats)
        return
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
