"""(s) Masks at native resolution: window masks vs whole-image masks on one large image (issue 28).

A stub detector returns ``--objects`` small boxes (32 to 160 px, fixed seed) scattered over one
``--side`` x ``--side`` mosaic; the tiny random SAM 2.1 (``--size`` px input) segments them with
``windows=False`` (the whole image downscaled to the model's input, masks upscaled to the full frame)
and ``windows=True`` (each box in a ``size`` x ``size`` window of the original pixels, windows
grouped), each with dense and with compact masks. Each run is its own process: ``predict`` is
timed once after a warm-up ``predict`` on a small image. Memory: "before" is the resident set with the
models loaded and the image decoded; the peak high-water mark is then reset (``/proc/self/clear_refs``)
so that "peak" is ``VmHWM`` during ``predict`` alone. "encoder images" counts the images the
segmenter's encoder saw.

    python bench/bench_windows.py --side 4096 --objects 50
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import common

MODES = [("whole", "dense"), ("whole", "compact"), ("windows", "dense"), ("windows", "compact")]


class ScatteredBoxes:
    """``n`` boxes of 32 to 160 px at random places (seed 0) of whatever image it is given, class 0."""

    def __init__(self, n: int) -> None:
        self.n = n

    def detect(self, images, ontology):  # noqa: ANN001 (the detector protocol)
        import supervision as sv

        out = []
        for img in images:
            h, w = np.asarray(img).shape[:2]
            rng = np.random.default_rng(0)
            size = np.minimum(rng.uniform(32, 160, (self.n, 2)), [w / 2, h / 2])  # a small warm-up image too
            x0, y0 = rng.uniform(0, w - size[:, 0]), rng.uniform(0, h - size[:, 1])
            boxes = np.stack([x0, y0, x0 + size[:, 0], y0 + size[:, 1]], 1).astype(np.float32)
            out.append(sv.Detections(xyxy=boxes, confidence=np.full(self.n, 0.9, np.float32),
                                     class_id=np.zeros(self.n, int), data={"class_name": np.array(["thing"] * self.n)}))
        return out


def _status_mb(key: str) -> float:
    """``VmHWM`` (peak resident set) or ``VmRSS`` of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(windows: str, masks: str, image: str, ckpt: str, objects: int, size: int) -> None:
    import torch

    torch.set_num_threads(1)
    from PIL import Image

    from grounded_sam import GroundedSAM

    gs = GroundedSAM({"thing": "thing"}, detector=ScatteredBoxes(objects), segmenter="sam2.1_hiera_tiny",
                     checkpoint=ckpt, image_size=size, device="cpu", windows=windows == "windows",
                     compact=masks == "compact")
    gs.predict(common.mosaic(size // 2, size // 2, n=2))  # warm-up, smaller than a window
    img = np.asarray(Image.open(image).convert("RGB"))
    Path("/proc/self/clear_refs").write_text("5")  # the peak starts again from the resident set now
    before = _status_mb("VmRSS")
    seen = []
    encode = gs.predictor.model.encode_images
    gs.predictor.model.encode_images = lambda x: (seen.append(len(x)), encode(x))[1]
    t0 = time.perf_counter()
    det = gs.predict(img)
    seconds = time.perf_counter() - t0
    area = np.asarray(det.mask.area if hasattr(det.mask, "area") else det.mask.reshape(len(det), -1).sum(1))
    print(json.dumps({"before_mb": before, "peak_mb": _status_mb("VmHWM"), "s": seconds, "encoded": sum(seen),
                      "area": float(area.mean()), "n": len(det)}))


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], size=256, repeats=1)
    p.add_argument("--side", type=int, default=4096)
    p.add_argument("--objects", type=int, default=50)
    p.add_argument("--child", nargs=6, help=argparse_suppress())
    args = p.parse_args()
    if args.child:
        windows, masks, image, ckpt, objects, size = args.child
        return child(windows, masks, image, ckpt, int(objects), int(size))
    from PIL import Image

    from tiny import save_tiny_sam

    tmp = Path(tempfile.mkdtemp(prefix="bench_windows_"))
    ckpt = save_tiny_sam(tmp)
    image = tmp / "big.png"
    Image.fromarray(common.mosaic(args.side, args.side, n=16)).save(image)
    rows = []
    for size in args.size:
        for windows, masks in MODES:
            cmd = [sys.executable, __file__, "--child", windows, masks, str(image), str(ckpt), str(args.objects),
                   str(size)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
            if not lines:
                rows.append([size, windows, masks, f"failed: rc {res.returncode}: {res.stderr[-200:]}"] + [""] * 6)
                continue
            r = json.loads(lines[-1])
            rows.append([size, windows, masks, r["n"], r["encoded"], round(r["before_mb"]), round(r["peak_mb"]),
                         round(r["peak_mb"] - r["before_mb"]), round(r["s"], 2), round(r["area"])])
    common.report(f"(s) Window masks vs whole-image masks, one {args.side}x{args.side} image, {args.objects} "
                  "small objects (issue 28)",
                  ["model input px", "masks from", "masks", "objects", "encoder images", "RSS before MB",
                   "peak RSS in predict MB", "peak - before MB", "predict s", "mean mask area px"], rows, args,
                  notes=["tiny random SAM 2.1 Hiera-T, stub detector (boxes of 32 to 160 px), CPU, one thread"])


def argparse_suppress() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
