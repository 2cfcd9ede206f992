"""Build a SAM model by config name and load its weights from any supported source."""

from __future__ import annotations

from pathlib import Path

import torch

from runtime.device import resolve_device
from segmenter.checkpoints.read import (
    check_state_dict,
    config_name_for_hub_id,
    infer_config_name,
    is_image_only,
    read_state_dict,
    resolve_checkpoint,
)
from segmenter.config import SAM1Config, SAM2Config, load_model_config
from segmenter.modeling.sam1 import SAM1Model
from segmenter.modeling.sam2 import SAM2Model
from segmenter.checkpoints.sam1 import fit_to_image_size

__all__ = ["build_sam", "from_pretrained", "load_weights"]


def build_sam(
    name: str,
    checkpoint: str | Path | None = None,
    device: str | torch.device | None = None,
    image_size: int | None = None,
) -> SAM2Model | SAM1Model:
    """Build the model ``name`` (e.g. ``"sam2.1_hiera_tiny"``, ``"sam_vit_b"``) in eval mode.

    Args:
        checkpoint: Meta's ``.pt`` / SAM 1 ``.pth``, a safetensors file or a transformers
            ``save_pretrained`` directory, or a hub id (``"facebook/sam2.1-hiera-tiny"``).
            ``None`` = random weights.
        device: ``None`` picks CUDA, MPS, then CPU.
        image_size: input resolution other than the config's 1024 (SAM 2: a multiple of 32,
            SAM 1: of 16); position embeddings are interpolated and feature sizes derived.
    """
    cfg = load_model_config(name, image_size=image_size)
    state = None
    if checkpoint is not None:
        state = read_state_dict(resolve_checkpoint(str(checkpoint), filename=cfg.checkpoint_filename))
    return _finish(cfg, state, str(checkpoint), device)


def _finish(
    cfg: SAM2Config | SAM1Config, state: dict[str, torch.Tensor] | None, source: str, device: str | torch.device | None
) -> SAM2Model | SAM1Model:
    # parameters made under a caller's inference_mode would be inference tensors, which have no
    # version counter (the modules' caches key on it) and cannot be updated later: build outside it
    with torch.inference_mode(False):
        model = _new_model(cfg, state)
        if state is not None:
            load_weights(model, state, source=source)
        return model.to(resolve_device(device)).eval()


def _new_model(cfg: SAM2Config | SAM1Config, state: dict[str, torch.Tensor] | None) -> SAM2Model | SAM1Model:
    if isinstance(cfg, SAM1Config):
        return SAM1Model(cfg)
    return SAM2Model(cfg, with_memory=state is None or not is_image_only(state))


def load_weights(model: SAM2Model | SAM1Model, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
    """Strict load with an error that lists missing / unexpected / mis-shaped keys.

    SAM 1 checkpoints saved at another input size get their position grid and relative-position
    tables resized to the model's ``image_size`` first.
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if isinstance(model, SAM1Model):
        state = fit_to_image_size(state, expected)
    try:
        check_state_dict(state, expected, model.config.name)
    except ValueError as e:
        raise ValueError(f"{e} (checkpoint: {source})") from None
    model.load_state_dict(state, strict=True)


def from_pretrained(
    id_or_path: str | Path,
    device: str | torch.device | None = None,
    image_size: int | None = None,
) -> SAM2Model | SAM1Model:
    """Load a model from a hub id or a local checkpoint, inferring its config (SAM 2 or SAM 1)."""
    source = str(id_or_path)
    name = config_name_for_hub_id(source)
    path = resolve_checkpoint(source, filename=load_model_config(name).checkpoint_filename if name else None)
    state = read_state_dict(path)
    name = name or infer_config_name(state)
    return _finish(load_model_config(name, image_size=image_size), state, source, device)
