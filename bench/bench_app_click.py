"""App responsiveness: click-to-mask latency on the cached embedding, and the embedding itself.

The app's path (:mod:`grounded_sam.app`): ``AppModels.embed`` computes the image embedding once
(``ImagePredictor.set_image``); every click then runs ``apply_click`` -> ``AppModels.refine``
(prompt encoder + mask decoder + upscaling to the image, on the cached embedding) and stores the
mask. Reported separately: the embedding, a + click (the object's clicks accumulate, as when a
user refines), a drawn box, and the overlay the page then shows (``render_session``).
sam2.1 tiny config with random weights; CPU by default.

    python bench/bench_app_click.py --size 1024 --clicks 20
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import common


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--clicks", type=int, default=20, help="clicks timed (median reported)")
    p.add_argument("--model", default="sam2.1_hiera_tiny")
    args = p.parse_args()
    if args.quick:
        args.size, args.clicks, args.repeats = [256], 5, 1
    device = common.setup(args)
    from grounded_sam.app.editing import BOX, FOREGROUND, apply_click
    from grounded_sam.app.models import AppModels, ModelOptions
    from grounded_sam.app.render import render_session
    from grounded_sam.app.session import ImageSession
    from segmenter import build_sam

    rows = []
    tmp = tempfile.TemporaryDirectory()
    for size in args.size:
        model = build_sam(args.model, device="cpu", image_size=size)
        ckpt = Path(tmp.name) / f"{args.model}_{size}.pt"
        torch.save({"model": model.state_dict()}, ckpt)
        models = AppModels(ModelOptions(segmenter=args.model, checkpoint=str(ckpt), image_size=size,
                                        device=str(device)))
        image = common.mosaic(size, size)
        rng = np.random.default_rng(0)

        def embed() -> None:
            models.note_embedded(models.click_predictor(), "")  # forget: the next embed computes it
            models.embed("bench", image)

        t_embed = common.median_time(embed, args.repeats, args.warmup, device)
        session = ImageSession(image, ["thing"], key="bench")
        apply_click(models, session, FOREGROUND, size / 2, size / 2)  # warm-up; the object exists now
        clicks, boxes, renders = [], [], []
        for _ in range(args.clicks):
            x, y = rng.uniform(0, size, 2)
            common.sync(device)
            t0 = time.perf_counter()
            apply_click(models, session, FOREGROUND, x, y)
            common.sync(device)
            clicks.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            render_session(session)
            renders.append(time.perf_counter() - t0)
            x0, y0 = rng.uniform(0, size / 2, 2)
            apply_click(models, session, BOX, x0, y0)
            common.sync(device)
            t0 = time.perf_counter()
            apply_click(models, session, BOX, x0 + size / 3, y0 + size / 3)
            common.sync(device)
            boxes.append(time.perf_counter() - t0)
            session.clear_prompts()
            session.objects[0].box = None
            apply_click(models, session, FOREGROUND, size / 2, size / 2)
        ms = lambda v: 1000 * statistics.median(v)  # noqa: E731
        rows.append([args.model, size, str(device), 1000 * t_embed, ms(clicks), max(clicks) * 1000, ms(boxes),
                     ms(renders), "yes" if ms(clicks) <= 150 else "NO"])
    common.report(
        "App: click-to-mask latency on the cached embedding (bench/bench_app_click.py)",
        ["model", "size", "device", "embedding ms", "+ click ms (median)", "+ click ms (max)", "box ms (median)",
         "overlay render ms (median)", "click <= 150 ms"],
        rows, args,
        notes=[f"{args.clicks} clicks per size, each on the image embedded once (set_image); a click = prompt "
               "encoder + mask decoder + upscaling to the image + storing the mask (apply_click); random weights"],
    )


if __name__ == "__main__":
    main()
