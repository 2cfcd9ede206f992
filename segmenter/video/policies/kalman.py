"""A constant-velocity Kalman filter on boxes in (x, y, a, h) space, batched over objects.

The filter of DeepSORT / ByteTrack that SAMURAI uses (``sam2/utils/kalman_filter.py`` in its
repository): state ``(x, y, a, h, vx, vy, va, vh)`` (box centre, aspect ratio w / h, height and
their velocities), unit time step, process and measurement noise proportional to the height
(``std_weight_position = 1/20``, ``std_weight_velocity = 1/160``). Every function takes a batch
of N filters, float64 on the CPU: ``mean`` (N, 8), ``cov`` (N, 8, 8).

Boxes follow SAMURAI's conventions: ``xyxy`` corners in pixel indices (the max corner inclusive,
as ``argwhere`` gives them), an empty mask has the box (0, 0, 0, 0), a zero height becomes 1.
"""

from __future__ import annotations

import torch

__all__ = ["KalmanBoxFilter", "xyxy_to_xyah", "xyah_to_xyxy", "box_iou_xyxy", "mask_boxes"]

STD_POSITION = 1.0 / 20
STD_VELOCITY = 1.0 / 160


def xyxy_to_xyah(box: torch.Tensor) -> torch.Tensor:
    """(..., 4) x1 y1 x2 y2 -> (..., 4) centre x, centre y, w / h, h (h = 0 counts as 1)."""
    x1, y1, x2, y2 = box.unbind(-1)
    h = y2 - y1
    h = torch.where(h == 0, torch.ones_like(h), h)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / h, h], dim=-1)


def xyah_to_xyxy(box: torch.Tensor) -> torch.Tensor:
    """(..., 4) centre x, centre y, aspect, height -> (..., 4) corners."""
    xc, yc, a, h = box.unbind(-1)
    half_w, half_h = a * h / 2, h / 2
    return torch.stack([xc - half_w, yc - half_h, xc + half_w, yc + half_h], dim=-1)


def box_iou_xyxy(box: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """IoU of ``box`` (N, 4) with each of ``boxes`` (N, K, 4) -> (N, K), SAMURAI's formula.

    Areas are ``(x2 - x1) * (y2 - y1)`` (no +1); a candidate box (0, 0, 0, 0) and a zero union
    give 0.
    """
    a = box[:, None, :]
    iw = (torch.minimum(a[..., 2], boxes[..., 2]) - torch.maximum(a[..., 0], boxes[..., 0])).clamp(min=0)
    ih = (torch.minimum(a[..., 3], boxes[..., 3]) - torch.maximum(a[..., 1], boxes[..., 1])).clamp(min=0)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    union = area_a + area_b - inter
    iou = torch.where(union != 0, inter / torch.where(union != 0, union, torch.ones_like(union)), torch.zeros_like(union))
    return torch.where((boxes == 0).all(-1), torch.zeros_like(iou), iou)


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(..., H, W) bool -> (..., 4) float64 xyxy of the True pixels (max corner inclusive); empty -> 0."""
    h, w = masks.shape[-2:]
    rows, cols = masks.any(dim=-1), masks.any(dim=-2)  # (..., H), (..., W)
    ys = torch.arange(h, device=masks.device)
    xs = torch.arange(w, device=masks.device)
    big = max(h, w)
    y1 = torch.where(rows, ys, big).amin(-1)
    y2 = torch.where(rows, ys, -1).amax(-1)
    x1 = torch.where(cols, xs, big).amin(-1)
    x2 = torch.where(cols, xs, -1).amax(-1)
    box = torch.stack([x1, y1, x2, y2], dim=-1)
    empty = ~rows.any(-1)
    return torch.where(empty[..., None], torch.zeros_like(box), box).to("cpu", torch.float64)


class KalmanBoxFilter:
    """Initiate / predict / update for N filters at once (each row its own object)."""

    def __init__(self) -> None:
        self.motion = torch.eye(8, dtype=torch.float64)
        self.motion[:4, 4:] = torch.eye(4, dtype=torch.float64)  # x += vx (dt = 1)

    @staticmethod
    def _std(h: torch.Tensor, pos: float, aspect: float, vel: float, aspect_vel: float) -> torch.Tensor:
        one = torch.ones_like(h)
        return torch.stack(
            [pos * h, pos * h, aspect * one, pos * h, vel * h, vel * h, aspect_vel * one, vel * h], dim=-1
        )  # (N, 8)

    def initiate(self, xyah: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 4) measurements -> mean (N, 8) with zero velocity, diagonal covariance (N, 8, 8)."""
        mean = torch.cat([xyah, torch.zeros_like(xyah)], dim=-1)
        std = self._std(xyah[:, 3], 2 * STD_POSITION, 1e-2, 10 * STD_VELOCITY, 1e-5)
        return mean, torch.diag_embed(std.square())

    def predict(self, mean: torch.Tensor, cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One constant-velocity step, noise scaled by the current height."""
        std = self._std(mean[:, 3], STD_POSITION, 1e-2, STD_VELOCITY, 1e-5)
        f = self.motion
        mean = mean @ f.T
        cov = f @ cov @ f.T + torch.diag_embed(std.square())
        return mean, cov

    def update(
        self, mean: torch.Tensor, cov: torch.Tensor, xyah: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Correct with measurements (N, 4) (the Cholesky form of the reference)."""
        h = mean[:, 3]
        one = torch.ones_like(h)
        noise = torch.stack([STD_POSITION * h, STD_POSITION * h, 1e-1 * one, STD_POSITION * h], dim=-1)
        proj_mean = mean[:, :4]
        proj_cov = cov[:, :4, :4] + torch.diag_embed(noise.square())  # (N, 4, 4)
        chol = torch.linalg.cholesky(proj_cov)
        gain = torch.cholesky_solve(cov[:, :, :4].transpose(1, 2), chol).transpose(1, 2)  # (N, 8, 4)
        innovation = xyah - proj_mean
        new_mean = mean + (gain @ innovation[:, :, None])[:, :, 0]
        new_cov = cov - gain @ proj_cov @ gain.transpose(1, 2)
        return new_mean, new_cov
