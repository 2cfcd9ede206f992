"""Build SAM models: the one place that knows which model class a config builds.

Every way to get a model goes through :func:`build_model`: :func:`build_sam` (a config name),
:func:`from_pretrained` (a hub id or checkpoint, config inferred), and the drop-in builders of
:mod:`segmenter.compat` (``build_sam2``, ``build_sam2_video_predictor``, their ``_hf`` variants,
``sam_model_registry``). Everything else tells SAM 2 from SAM 1 by the model interface
(:mod:`segmenter.modeling.interface`), never by a family name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from gsam_runtime.device import resolve_device
from gsam_runtime.hub import MissingModelsError, offline_mode
from segmenter.checkpoints.hub import require_checkpoint
from segmenter.checkpoints.read import (
    check_state_dict,
    config_name_for_hub_id,
    infer_config_name,
    is_image_only,
    read_state_dict,
    resolve_checkpoint,
)
from segmenter.checkpoints.sam1 import fit_to_image_size
from segmenter.config import ModelConfig, SAM1Config, SAM2Config, load_model_config
from segmenter.modeling.sam1 import SAM1Model
from segmenter.modeling.sam2 import SAM2Model

__all__ = ["ModelSpec", "build_sam", "build_model", "from_pretrained", "load_weights", "read_checkpoint"]

StateDict = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class ModelSpec:
    """How :func:`build_sam` / :func:`from_pretrained` built a model: enough to build it again elsewhere.

    Set as ``model.build_spec`` on every model loaded from a checkpoint (a local checkpoint is
    recorded as an absolute path); models with random weights or built by hand have none.
    ``build(device)`` loads the same weights with the same config and image size on ``device``.
    """

    name: str
    checkpoint: str
    image_size: int | None = None

    def build(self, device: str | torch.device | None = None) -> SAM2Model | SAM1Model:
        return build_sam(self.name, checkpoint=self.checkpoint, device=device, image_size=self.image_size)


def _remember(model: SAM2Model | SAM1Model, name: str, checkpoint: str | Path, image_size: int | None) -> None:
    source = Path(checkpoint).expanduser()
    where = str(source.resolve()) if source.exists() else str(checkpoint)
    model.build_spec = ModelSpec(name, where, image_size)


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

    A model loaded from a checkpoint remembers how: ``model.build_spec`` (:class:`ModelSpec`).
    """
    dev = resolve_device(device)  # a missing device fails before any work
    cfg = load_model_config(name, image_size=image_size)
    state = None if checkpoint is None else read_checkpoint(checkpoint, cfg)
    model = build_model(cfg, state, dev, source=str(checkpoint))
    if checkpoint is not None:
        _remember(model, name, checkpoint, image_size)
    return model


def from_pretrained(
    id_or_path: str | Path,
    device: str | torch.device | None = None,
    image_size: int | None = None,
) -> SAM2Model | SAM1Model:
    """Load a model from a hub id or a local checkpoint, inferring its config (SAM 2 or SAM 1)."""
    dev = resolve_device(device)
    source = str(id_or_path)
    name = config_name_for_hub_id(source)
    state = read_checkpoint(source, load_model_config(name) if name else None)
    name = name or infer_config_name(state)
    model = build_model(load_model_config(name, image_size=image_size), state, dev, source=source)
    _remember(model, name, source, image_size)
    return model


def read_checkpoint(checkpoint: str | Path, config: ModelConfig | None = None) -> dict[str, torch.Tensor]:
    """The official state dict of a checkpoint file, folder or hub id (a hub repo with several
    files: the one ``config`` names). A hub id that is neither cached nor downloadable from here
    raises :class:`gsam_runtime.hub.MissingModelsError` at once, saying how to fetch it."""
    filename = None if config is None else config.checkpoint_filename
    try:  # a hub id neither cached nor downloadable fails here at once, not after minutes of retries
        offline = require_checkpoint(checkpoint, None if config is None else config.name)
    except MissingModelsError as e:
        raise e.with_traceback(None) from None  # the message says it all: no frames of ours
    with offline_mode(offline):
        return read_state_dict(resolve_checkpoint(str(checkpoint), filename=filename))


def build_model(
    config: ModelConfig,
    state: StateDict | None = None,
    device: str | torch.device | None = None,
    source: str = "state dict",
) -> SAM2Model | SAM1Model:
    """The model of ``config`` with the weights of ``state`` (random without), on ``device``, in eval mode.

    ``source`` names the checkpoint in errors. The model is built outside any inference mode of
    the caller, so its parameters are ordinary tensors: it runs under ``torch.inference_mode()``,
    ``torch.no_grad()`` and autograd alike, whatever the mode it was built in.
    """
    dev = resolve_device(device)
    with torch.inference_mode(False):
        model = _new_model(config, state)
        if state is not None:
            load_weights(model, state, source=source)
        return model.to(dev).eval()


def _new_model(config: ModelConfig, state: StateDict | None) -> SAM2Model | SAM1Model:
    if isinstance(config, SAM1Config):
        return SAM1Model(config)
    if isinstance(config, SAM2Config):
        # transformers' Sam2Model checkpoints carry no memory modules: build the image-only model
        return SAM2Model(config, with_memory=state is None or not is_image_only(state))
    raise TypeError(f"unknown model config type {type(config).__name__}")


def load_weights(model: SAM2Model | SAM1Model, state: StateDict, source: str = "state dict") -> None:
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
    with torch.inference_mode(False):
        model.load_state_dict(state, strict=True)
