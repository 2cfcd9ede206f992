"""Tiny random checkpoints in real formats, for end-to-end tests (no network)."""

from __future__ import annotations

from pathlib import Path

import torch

SAM_IMAGE_SIZE = 256
VIDEO_ONNX_SIZE = 128  # tiny_onnx_video (tests/conftest.py)


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


def export_tiny_onnx(checkpoint: Path, folder: Path) -> Path:
    """``checkpoint`` (SAM 2.1 Hiera-T for 256 px) exported to ONNX (image parts, fp32) into ``folder`` by
    ``grounded-sam export --overwrite`` into ``folder`` made beforehand (the CLI path that replaces an
    existing folder); what the command printed goes to ``<folder>.log`` (:func:`export_log`)."""
    from typer.testing import CliRunner

    from grounded_sam.cli import app

    folder = Path(folder)
    folder.mkdir(parents=True)
    args = ["export", "--model", "sam2.1_hiera_tiny", "--checkpoint", str(checkpoint), "--image-size",
            str(SAM_IMAGE_SIZE), "--format", "onnx", "--out", str(folder), "--overwrite"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    export_log(folder).write_text(result.output)
    return folder


def export_log(folder: Path) -> Path:
    """What ``grounded-sam export`` printed when it made ``folder`` (:func:`export_tiny_onnx`)."""
    return Path(folder).with_name(Path(folder).name + ".log")


def tiny_video_sam(checkpoint: Path | None = None):
    """SAM 2.1 Hiera-T for 128 px: random (seed 0) with object scores of about -0.4 .. 0.5 on tracked
    frames (presence changes), or loaded from ``checkpoint``."""
    from segmenter import build_sam

    if checkpoint is not None:
        return build_sam("sam2.1_hiera_tiny", checkpoint=checkpoint, device="cpu", image_size=VIDEO_ONNX_SIZE)
    torch.manual_seed(0)
    model = build_sam("sam2.1_hiera_tiny", device="cpu", image_size=VIDEO_ONNX_SIZE)
    with torch.no_grad():
        head = model.sam_mask_decoder.pred_obj_score_head.layers[-1]
        head.weight.mul_(100.0)
        head.bias.fill_(-2.0)
    return model


def export_tiny_onnx_video(root: Path) -> None:
    """``root/sam.pt`` (:func:`tiny_video_sam`) and its image + video parts in ``root/sam``."""
    from segmenter.export import to_onnx

    model = tiny_video_sam()
    torch.save({"model": model.state_dict()}, Path(root) / "sam.pt")
    to_onnx(model, Path(root) / "sam", parts=("image", "video"))
