"""Tiny random checkpoints in real formats, for end-to-end tests (no network)."""

from __future__ import annotations

from pathlib import Path

import torch

SAM_IMAGE_SIZE = 256


def save_tiny_sam(folder: Path, name: str = "sam2.1_hiera_tiny", seed: int = 0) -> Path:
    """A randomly initialised SAM 2 saved as Meta's ``{"model": state_dict}`` .pt."""
    from segmenter import build_sam

    torch.manual_seed(seed)
    model = build_sam(name, device="cpu", image_size=SAM_IMAGE_SIZE)
    with torch.no_grad():  # objects "present": video tracking keeps them
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(2.0)
    path = Path(folder) / f"{name}.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


def save_tiny_owlv2(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised OWLv2 + processor saved with ``save_pretrained``."""
    from tiny_detectors import tiny_owl

    torch.manual_seed(seed)
    model, proc = tiny_owl(v2=True)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return Path(folder)
