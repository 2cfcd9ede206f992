"""(u) Labeling one huge image end to end: peak RSS and time of ``label`` with tiles (issue 28).

A ``--side`` x ``--side`` PNG (default 16,000) holds ``--objects`` red discs (radius 12-40 px) on a
smooth background (tests/large_images.py). The detector is a real one for that picture: it finds
the red connected components of whatever it is given, so tiles see only their own discs and a disc
cut by a tile border is merged back by the tiler. The tiny random SAM 2.1 (at ``--sam-size``, 1024
as the released models) segments the boxes in windows at native resolution (``windows="auto"``: on
when tiled) and ``label`` writes COCO RLE from compact masks. Each run is its own process (the pixel
limit raised for the file, as a user would with ``--max-pixels``); peak RSS is its ``VmHWM``,
"models" the peak after loading the models.

    python bench/bench_large.py --side 16000 --objects 300
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


import common

def _peak_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(folder: str, out: str, ckpt: str, tile: int, windows: str, sam_size: int) -> None:
    import torch

    torch.set_num_threads(1)
    from grounded_sam import GroundedSAM
    from gsam_runtime.images import set_max_pixels

    set_max_pixels(0)
    win: bool | str = {"auto": "auto", "on": True, "off": False}[windows]
    from large_images import RedBlobDetector

    gs = GroundedSAM({"disc": "disc"}, detector=RedBlobDetector(), segmenter="sam2.1_hiera_tiny", checkpoint=ckpt,
                     image_size=sam_size, device="cpu", tile=tile, windows=win)
    models = _peak_kb()
    t0 = time.perf_counter()
    report = gs.label(folder, extension=".png", output_folder=out, progress=False)
    status = "ok" if report.ok else "failed: " + "; ".join(f"{k}: {v}" for k, v in report.failed.items())[:300]
    print(json.dumps({"models_mb": models / 1024, "peak_mb": _peak_kb() / 1024, "s": time.perf_counter() - t0,
                      "status": status}))


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], size=256, repeats=1)
    p.add_argument("--side", type=int, default=16000)
    p.add_argument("--objects", type=int, default=300)
    p.add_argument("--tile", type=int, default=1024)
    p.add_argument("--windows", nargs="+", default=["auto"], choices=["auto", "on", "off"])
    p.add_argument("--sam-size", type=int, default=1024, help="the segmenter's input side (the released models': 1024)")
    p.add_argument("--child", nargs=6, help=argparse_suppress())
    args = p.parse_args()
    if args.child:
        folder, out, ckpt, tile, windows, sam_size = args.child
        return child(folder, out, ckpt, int(tile), windows, int(sam_size))
    from large_images import save_disc_image
    from tiny import save_tiny_sam

    tmp = Path(tempfile.mkdtemp(prefix="bench_large_"))
    ckpt = save_tiny_sam(tmp)
    (tmp / "images").mkdir()
    t0 = time.perf_counter()
    truth = save_disc_image(tmp / "images" / "huge.png", args.side, args.objects)
    made = time.perf_counter() - t0
    mb = (tmp / "images" / "huge.png").stat().st_size / 2**20
    rows = []
    for windows in args.windows:
        out = tmp / f"out_{windows}"
        cmd = [sys.executable, __file__, "--child", str(tmp / "images"), str(out), str(ckpt), str(args.tile), windows,
               str(args.sam_size)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
        r = json.loads(lines[-1]) if lines else {"status": f"rc {res.returncode}: {res.stderr[-400:]}"}
        found = ""
        if r.get("status") == "ok":  # one annotation per disc: the tiler merged the discs cut by tile borders
            found = f"{len(json.loads((out / 'annotations.json').read_text())['annotations'])} / {len(truth)}"
        rows.append([f"{args.side}x{args.side}", args.objects, args.tile, windows,
                     round(r.get("models_mb", float("nan"))), round(r.get("peak_mb", float("nan"))),
                     round(r.get("s", float("nan")), 1), r["status"], found])
    common.report(f"(u) Labeling one {args.side}x{args.side} image with {args.objects} objects, tiled (issue 28)",
                  ["image", "objects", "tile", "windows", "RSS after models MB", "peak RSS MB", "label s", "status",
                   "annotations / discs"], rows, args,
                  notes=[f"PNG {mb:.0f} MB (written in {made:.0f} s); red-blob detector on each tile; tiny random "
                         f"SAM 2.1 Hiera-T at {args.sam_size} px input (windows of that side); CPU; COCO RLE output "
                         "from compact masks"])


def argparse_suppress() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
