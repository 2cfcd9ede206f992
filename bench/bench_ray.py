"""(r) Labeling throughput, local vs Ray (1 and 2 workers), tiny random OWLv2 + SAM 2.1 tiny.

Each backend labels a folder of N and of 2N images (``GroundedSAM.label``, COCO, fresh output
folders). The difference gives the steady-state rate, ``N / (t(2N) - t(N))`` images/s, and the
intercept ``t(N) - N / rate`` the fixed cost of a job: for Ray, starting the actors and building
one pipeline in each (the driver and Ray itself are up already: ``ray.init`` is timed apart).
Also reported: what crosses the object store per image (the task's JSON row out, the record's
serialised bytes back), measured on the local run's records.

    python bench/bench_ray.py --images 32 --size 256
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np

import common


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], size=256, repeats=1)
    p.add_argument("--images", type=int, default=32, help="N (the jobs label N and 2N images)")
    p.add_argument("--batch", type=int, default=2, help="batch_size (images per predictor call and per Ray task)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()
    if args.quick:
        args.images, args.workers = 4, [1]
    common.setup(args)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from PIL import Image
    from tiny import save_tiny_owlv2, save_tiny_sam

    from grounded_sam import GroundedSAM
    from grounded_sam.labeling import STORE_DIR

    tmp = Path(tempfile.mkdtemp())
    owl, sam = save_tiny_owlv2(tmp / "owl"), save_tiny_sam(tmp)
    gs = GroundedSAM({"a dog": "dog", "a cat": "cat"}, detector=str(owl), segmenter="sam2.1_hiera_tiny",
                     checkpoint=str(sam), image_size=args.size[0], device="cpu", box_threshold=0.0, nms_iou=0.3)
    rng = np.random.default_rng(0)
    folders = {}
    for n in (args.images, 2 * args.images):
        folders[n] = tmp / f"in{n}"
        folders[n].mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(folders[n] / f"{i:04d}.png")

    def job(n: int, out: str, **kw) -> float:
        t = time.perf_counter()
        report = gs.label(folders[n], ".png", tmp / out, batch_size=args.batch, progress=False, **kw)
        assert report.ok and report.labeled == n, report.summary()
        return time.perf_counter() - t

    runs = {"local": {}}
    for n in folders:
        runs["local"][n] = job(n, f"local{n}")
    import ray

    t = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, _node_ip_address="127.0.0.1")
    ray_start = time.perf_counter() - t
    for w in args.workers:
        runs[f"ray, {w} worker{'s' * (w > 1)}"] = {
            n: job(n, f"ray{w}_{n}", backend="ray", num_workers=w, num_cpus_per_worker=1) for n in folders}
    ray.shutdown()

    n = args.images
    records = sorted((tmp / f"local{2 * n}" / STORE_DIR / "records").rglob("*.json"))
    back = np.mean([len(pickle.dumps(r.read_text())) for r in records])
    out = np.mean([len(json.dumps([str(folders[2 * n] / f"{i:04d}.png"), f"{i:04d}.png"])) for i in range(2 * n)])
    local_rate = n / (runs["local"][2 * n] - runs["local"][n])
    rows = []
    for name, t_ in runs.items():
        rate = n / (t_[2 * n] - t_[n])
        rows.append([name, t_[n], t_[2 * n], rate, rate / local_rate, t_[n] - n / rate])
    common.report(
        "Labeling: local vs Ray workers (images/s, fixed cost per job)",
        ["backend", f"t({n}) s", f"t({2 * n}) s", "images/s", "vs local", "fixed cost s"], rows, args,
        notes=[f"tiny random OWLv2 + SAM 2.1 tiny at image_size {args.size[0]}, 320x240 PNGs, batch_size "
               f"{args.batch}, CPU; one local Ray on this machine ({os.cpu_count()} CPUs, 1 CPU per worker)",
               f"ray.init: {ray_start:.1f} s (once per driver, not in the table)",
               f"object store per image: {out:.0f} B out (task row), {back:.0f} B back (record with RLE masks)"],
    )


if __name__ == "__main__":
    main()
