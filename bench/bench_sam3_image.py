"""SAM 3 images: seconds per image for 1 and 8 captions, ours vs transformers' per-caption loop.

Ours is ``load_detector("sam3")``: the image side once per image, text features cached, the
captions decoded against the shared features. transformers' loop is its documented example,
once per caption: ``processor(images=image, text=caption)``, ``model(**inputs)``,
``post_process_instance_segmentation``. Both run the same random weights on the same image.

``--model b`` is a toy config whose image side dominates as in SAM 3 (ViT 384-d, 12 layers,
15.6M of 15.8M parameters at 448 px); ``--model a`` a smaller ViT (256-d, 8 layers) where the
per-prompt part weighs more; ``--model c`` is b with the toy decoder (32-d, 10 queries); ``--model full`` is the default ``Sam3Config`` on random weights at
1008 px (one forward takes minutes on a CPU)::

    python bench/bench_sam3_image.py --model a b --repeats 3
    python bench/bench_sam3_image.py --model full --repeats 1 --warmup 0
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

import common

CAPTIONS = ["a cat", "the dog", "a person", "red car", "remote control", "a bird", "green tree", "a cup"]
CONFIGS = {  # tiny_sam3 keyword arguments
    "a": dict(vit_hidden=256, vit_layers=8, image_size=448, hidden=64, num_queries=50),
    "b": dict(vit_hidden=384, vit_layers=12, image_size=448, hidden=64, num_queries=50),
    "c": dict(vit_hidden=384, vit_layers=12, image_size=448),  # b with the toy decoder (32-d, 10 queries)
}


def build(name: str, folder: Path) -> str:
    if name == "full":
        from transformers import Sam3Config, Sam3Model

        from tiny_detectors import tiny_sam3

        _, proc = tiny_sam3(image_size=1008)  # a processor at 1008 px with the toy tokenizer
        model = Sam3Model(Sam3Config()).eval()
    else:
        from tiny_detectors import tiny_sam3

        model, proc = tiny_sam3(**CONFIGS[name])
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return str(folder)


def transformers_loop(model, processor, image: np.ndarray, captions: list[str], threshold: float):
    out = []
    for caption in captions:
        inputs = processor(images=image, text=caption, return_tensors="pt")
        with torch.inference_mode():
            outputs = model(**inputs)
        out.append(processor.post_process_instance_segmentation(
            outputs, threshold=threshold, mask_threshold=0.5, target_sizes=inputs["original_sizes"].tolist()
        ))
    return out


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], size=448, repeats=3)
    p.add_argument("--model", nargs="+", default=["a", "b"], choices=["a", "b", "c", "full"])
    args = p.parse_args()
    device = common.setup(args)
    from transformers import Sam3Model, Sam3Processor

    from detectors import load_detector
    from ontologies import CaptionOntology

    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    threshold = 0.5
    rows = []
    for name in args.model:
        with tempfile.TemporaryDirectory() as tmp:
            torch.manual_seed(0)
            folder = build(name, Path(tmp))
            ours = load_detector("sam3", model_id=folder, device=device, box_threshold=threshold)
            model = Sam3Model.from_pretrained(folder).to(device).eval()
            processor = Sam3Processor.from_pretrained(folder)
            vision = sum(p.numel() for p in model.vision_encoder.parameters()) / 1e6
            total = sum(p.numel() for p in model.parameters()) / 1e6
            times = {}
            for n in (1, 8):
                onto = CaptionOntology({c: c for c in CAPTIONS[:n]})
                fns = {"ours": lambda o=onto: ours.detect([image], o)}
                if not args.no_reference:
                    fns["loop"] = lambda n=n: transformers_loop(model, processor, image, CAPTIONS[:n], threshold)
                times[n] = common.interleaved(fns, args.repeats, args.warmup, device)
            ref1, ref8 = times[1].get("loop"), times[8].get("loop")
            rows.append([
                name, f"{vision:.1f} / {total:.1f}", times[1]["ours"], times[8]["ours"],
                times[8]["ours"] / times[1]["ours"], ref1 or "-", ref8 or "-",
                common.ratio(times[8]["ours"], ref8),
            ])
    common.report(
        "SAM 3 images: 1 vs 8 captions, ours vs transformers' per-caption loop",
        ["config", "vision / total M params", "ours 1 cap s", "ours 8 cap s", "ours 8/1",
         "loop 1 cap s", "loop 8 cap s", "ours/loop at 8"],
        rows, args,
        notes=["random weights, one 640x480 image, CPU fp32 unless --device cuda (bf16 autocast)",
               "goal: ours 8 captions <= 1.5 x ours 1 caption"],
    )


if __name__ == "__main__":
    main()
