"""Per-object low-res logits -> the (N, 1, H, W) video-resolution logits a tracking call returns."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from segmenter.video.tracking import NO_OBJ_SCORE
from segmenter.video.state import VideoState

__all__ = ["non_overlapping", "to_video_res", "consolidate"]


def non_overlapping(masks: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W): keep each pixel for the highest-scoring object; others are clamped to <= -10."""
    if masks.shape[0] <= 1:
        return masks
    winner = masks.argmax(dim=0, keepdim=True)
    keep = winner == torch.arange(masks.shape[0], device=masks.device)[:, None, None, None]
    return torch.where(keep, masks, masks.clamp(max=-10.0))


def _resize(masks: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    if tuple(masks.shape[-2:]) == hw:
        return masks
    return F.interpolate(masks, hw, mode="bilinear", align_corners=False)


def to_video_res(state: VideoState, low_res: torch.Tensor, non_overlap: bool) -> torch.Tensor:
    """(N, 1, h, w) low-res logits of all objects -> (N, 1, H, W) on the compute device."""
    hw = (state.video_height, state.video_width)
    low_res = low_res.to(state.device)
    if low_res.shape[0] == 0:
        return low_res.new_zeros(0, 1, *hw)
    out = _resize(low_res, hw)
    return non_overlapping(out) if non_overlap else out


def consolidate(
    state: VideoState, frame_idx: int, is_cond: bool, non_overlap: bool
) -> tuple[torch.Tensor, list[object]]:
    """Every object's latest mask on a frame at video resolution; objects without one get
    ``NO_OBJ_SCORE``. Also returns the ids whose mask there was released (bounded state)."""
    hw = (state.video_height, state.video_width)
    out = torch.full((len(state.objects), 1, *hw), NO_OBJ_SCORE, device=state.storage_device)
    released = []
    for i, obj in enumerate(state.objects.values()):
        entry = obj.output_at(frame_idx, is_cond)
        if entry is None or entry.pred_masks is None:
            if entry is not None or frame_idx in obj.tracked:
                released.append(obj.obj_id)
            continue
        out[i : i + 1] = _resize(entry.pred_masks, hw)
    out = out.to(state.device)
    return (non_overlapping(out) if non_overlap else out), released
