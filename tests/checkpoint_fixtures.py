"""Checkpoint fixtures shared by the tests: randomised transformers SAM 2 models and a Hub-style cache."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import torch

SIZE = 512  # image size of the transformers models built here (embedding grid 32 x 32)


def hf_sam2_model(video: bool, seed: int, size: int = SIZE) -> torch.nn.Module:
    """A randomised transformers SAM 2.1 tiny at ``size`` px, its object score biased to "present"."""
    from transformers import (
        Sam2Config,
        Sam2HieraDetConfig,
        Sam2Model,
        Sam2VideoConfig,
        Sam2VideoModel,
        Sam2VisionConfig,
    )

    vision = Sam2VisionConfig(
        backbone_config=Sam2HieraDetConfig(image_size=[size, size]),
        backbone_feature_sizes=[[size // 4] * 2, [size // 8] * 2, [size // 16] * 2],
    )
    if video:
        config = Sam2VideoConfig(
            image_size=size,
            vision_config=vision,
            prompt_encoder_config={"image_size": size},
            memory_attention_rope_feat_sizes=[size // 16] * 2,
        )
        model = Sam2VideoModel(config)
    else:
        model = Sam2Model(Sam2Config(vision_config=vision, prompt_encoder_config={"image_size": size}))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():  # persistent tensors only (RoPE tables stay exact)
            if t.is_floating_point():
                noise = torch.randn(t.shape, generator=gen)
                if "norm" in name and name.endswith("weight"):
                    t.copy_(1.0 + 0.1 * noise)
                else:
                    t.add_(0.05 * noise)
        model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(2.0)
        model.prompt_encoder.shared_embedding.positional_embedding.copy_(
            model.shared_image_embedding.positional_embedding
        )
    return model.eval()


def save_pretrained(model: torch.nn.Module, folder: Path, **kwargs) -> Path:
    from transformers.utils import logging

    logging.disable_progress_bar()
    model.save_pretrained(folder, **kwargs)
    return folder


def cache_file(cache: Path, repo_id: str, source: Path, filename: str, sha: str = "a" * 40) -> Path:
    """Put ``source`` into a Hub-style cache: blobs/<hash>, snapshots/<sha>/<filename> -> blob, refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    blob = repo / "blobs" / hashlib.sha256(f"{repo_id}/{filename}".encode()).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, blob)
    except OSError:
        shutil.copyfile(source, blob)
    link = repo / "snapshots" / sha / filename
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(sha)
    return link
