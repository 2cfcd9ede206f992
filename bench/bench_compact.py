"""(r) Peak RSS of labeling one large image with many objects: dense vs compact masks (issue 28).

A stub detector returns ``--objects`` boxes on a grid of one ``--side`` x ``--side`` image; the
tiny random SAM 2.1 (256 px input) segments them; the image is labeled into COCO with dense
masks (``label_folder`` with plain ``predict``: an ``(N, H, W)`` array) and with ``label``
(compact masks, the default there). Each run is its own process; peak RSS is its ``VmHWM``
(``/proc/self/status``; ``ru_maxrss`` would carry the parent's high-water mark over the fork),
"models" the peak after loading the models (before the image). A dense run that
goes over ``--limit-gb`` of address space stops with MemoryError and is reported as such. The
two ``annotations.json`` are compared byte for byte when both runs finish.

    python bench/bench_compact.py --side 4096 --objects 50 200
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import common


class GridDetector:
    """``n`` boxes on a grid, 60 % of each cell, class 0."""

    def __init__(self, n: int) -> None:
        self.n = n

    def detect(self, images, ontology):  # noqa: ANN001 (the detector protocol)
        import supervision as sv

        out = []
        for img in images:
            h, w = np.asarray(img).shape[:2]
            cols = int(np.ceil(np.sqrt(self.n)))
            rows = int(np.ceil(self.n / cols))
            ch, cw = h / rows, w / cols
            boxes = [[(k % cols + 0.2) * cw, (k // cols + 0.2) * ch, (k % cols + 0.8) * cw, (k // cols + 0.8) * ch]
                     for k in range(self.n)]
            out.append(sv.Detections(xyxy=np.array(boxes, np.float32), confidence=np.full(self.n, 0.9, np.float32),
                                     class_id=np.zeros(self.n, int), data={"class_name": np.array(["thing"] * self.n)}))
        return out


def _peak_kb() -> int:
    """This process's peak resident set (kB), its own only (``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(mode: str, folder: str, out: str, ckpt: str, objects: int, limit_gb: float) -> None:
    import torch

    torch.set_num_threads(1)
    from grounded_sam import GroundedSAM
    from grounded_sam.labeling import label_folder
    from tiny import SAM_IMAGE_SIZE

    gs = GroundedSAM({"thing": "thing"}, detector=GridDetector(objects), segmenter="sam2.1_hiera_tiny",
                     checkpoint=ckpt, image_size=SAM_IMAGE_SIZE, device="cpu")
    models = _peak_kb()
    limit = int(limit_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    t0 = time.perf_counter()
    status = "ok"
    try:
        if mode == "dense":
            report = label_folder(gs.predict, Path(folder), out, gs.classes, extension=".png", progress=False,
                                  fingerprint=gs.fingerprint())
        else:
            report = gs.label(folder, extension=".png", output_folder=out, progress=False)
        if not report.ok:
            status = "failed: " + "; ".join(f"{k}: {v}" for k, v in report.failed.items())[:200]
    except MemoryError:
        status = f"MemoryError (over {limit_gb:g} GB)"
    peak = _peak_kb()
    print(json.dumps({"models_mb": models / 1024, "peak_mb": peak / 1024, "s": time.perf_counter() - t0,
                      "status": status}))


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], size=256, repeats=1)
    p.add_argument("--side", type=int, default=4096)
    p.add_argument("--objects", type=int, nargs="+", default=[200])
    p.add_argument("--limit-gb", type=float, default=12.0, help="address-space limit of each run")
    p.add_argument("--child", nargs=5, help=argparse_suppress())
    args = p.parse_args()
    if args.child:
        mode, folder, out, ckpt, objects = args.child
        return child(mode, folder, out, ckpt, int(objects), args.limit_gb)
    from PIL import Image

    from tiny import save_tiny_sam

    tmp = Path(tempfile.mkdtemp(prefix="bench_compact_"))
    ckpt = save_tiny_sam(tmp)
    (tmp / "images").mkdir()
    Image.fromarray(common.mosaic(args.side, args.side, n=8)).save(tmp / "images" / "big.png")
    rows = []
    for n in args.objects:
        runs = {}
        for mode in ("dense", "compact"):
            out = tmp / f"{mode}_{n}"
            cmd = [sys.executable, __file__, "--child", mode, str(tmp / "images"), str(out), str(ckpt), str(n),
                   "--limit-gb", str(args.limit_gb)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
            runs[mode] = json.loads(lines[-1]) if lines else {"status": f"rc {res.returncode}: {res.stderr[-300:]}"}
            r = runs[mode]
            same, area = "", ""
            if r.get("status") == "ok":
                anns = json.loads((out / "annotations.json").read_text())["annotations"]
                area = f"{len(anns)} / {round(np.mean([a['area'] for a in anns])) if anns else 0}"
            if mode == "compact" and all(runs[m].get("status") == "ok" for m in runs):
                a, b = ((tmp / f"{m}_{n}" / "annotations.json").read_bytes() for m in ("dense", "compact"))
                same = "identical" if a == b else "DIFFER"
            rows.append([f"{args.side}x{args.side}", n, mode, round(r.get("models_mb", float("nan"))),
                         round(r.get("peak_mb", float("nan"))), round(r.get("s", float("nan")), 1), r["status"], area, same])
    common.report(f"(r) Peak RSS labeling one {args.side}x{args.side} image: dense vs compact masks (issue 28)",
                  ["image", "objects", "masks", "RSS after models MB", "peak RSS MB", "label s", "status",
                   "masks written / mean area px", "annotations.json"], rows, args,
                  notes=["tiny random SAM 2.1 Hiera-T (256 px input), stub grid detector, CPU, COCO RLE output",
                         f"address-space limit per run {args.limit_gb:g} GB"])


def argparse_suppress() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
