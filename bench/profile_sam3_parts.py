"""SAM 3 (default config, random weights, 1008 px): seconds of the image side and of each
per-prompt part, by module hooks on ``transformers.Sam3Model`` (1 CPU thread)::

    python bench/profile_sam3_parts.py
"""

from __future__ import annotations

import collections
import time

import torch
from transformers import Sam3Config, Sam3Model
from transformers.modeling_outputs import BaseModelOutputWithPooling


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = Sam3Model(Sam3Config()).eval()
    pixels = torch.randn(1, 3, 1008, 1008)
    start = time.perf_counter()
    with torch.inference_mode():
        vision = model.get_vision_features(pixel_values=pixels)
        ids, mask = torch.randint(0, 1000, (1, 32)), torch.ones(1, 32, dtype=torch.long)
        text = model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output  # (1, T, D)
    print(f"image side: {time.perf_counter() - start:.1f} s")

    spent: dict[str, float] = collections.defaultdict(float)
    began: dict[str, float] = {}
    for name, module in model.named_modules():
        if name.count(".") > 1 or not name or name.startswith(("vision_encoder", "text_encoder")):
            continue
        module.register_forward_pre_hook(lambda m, i, n=name: began.__setitem__(n, time.perf_counter()))
        module.register_forward_hook(lambda m, i, o, n=name: spent.__setitem__(n, spent[n] + time.perf_counter() - began[n]))
    for rows in (1, 2):  # prompts decoded together against the same image features
        spent.clear()
        vis = type(vision)(
            fpn_hidden_states=tuple(f.expand(rows, -1, -1, -1) for f in vision.fpn_hidden_states),
            fpn_position_encoding=tuple(p.expand(rows, -1, -1, -1) for p in vision.fpn_position_encoding),
        )
        start = time.perf_counter()
        with torch.inference_mode():
            model(vision_embeds=vis, text_embeds=BaseModelOutputWithPooling(pooler_output=text.expand(rows, -1, -1)),
                  attention_mask=mask.expand(rows, -1))
        print(f"{rows} prompt(s): {time.perf_counter() - start:.2f} s")
        for name, seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
            if seconds > 0.1:
                print(f"  {name:<40} {seconds:.2f} s")


if __name__ == "__main__":
    main()
