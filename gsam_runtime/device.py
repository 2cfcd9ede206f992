"""Device and dtype, chosen in one place and passed down.

``device=None`` means the best available accelerator: CUDA, then MPS, then CPU. Asking for a
device that is not there is an error, never a silent fallback. Mixed precision is bf16 autocast
on CUDA only (CPUs without native bf16 run it ~10x slower; MPS autocast is incomplete).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["resolve_device", "autocast"]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Turn ``None``/``"cuda"``/``"cuda:1"``/``"mps"``/``"cpu"``/``torch.device`` into a usable device."""
    import torch

    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"unknown device {device!r}: use 'cuda', 'cuda:N', 'mps', 'cpu' or None") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device {str(device)!r} was requested but CUDA is not available on this machine "
                "(torch.cuda.is_available() is False); pass device='cpu' (or None to pick the best "
                "available device)"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RuntimeError(
                f"device {str(device)!r} was requested but only {torch.cuda.device_count()} CUDA "
                "device(s) exist"
            )
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise RuntimeError(
                f"device {str(device)!r} was requested but MPS is not available on this machine; "
                "pass device='cpu' (or None to pick the best available device)"
            )
    elif dev.type != "cpu":
        raise ValueError(f"unsupported device {str(device)!r}: use 'cuda', 'mps' or 'cpu'")
    return dev


@contextlib.contextmanager
def autocast(device: str | torch.device, enabled: bool = True, dtype: torch.dtype | None = None) -> Iterator[None]:
    """bf16 autocast on CUDA when ``enabled``; a no-op elsewhere (fp32)."""
    import torch

    dev = torch.device(device)
    if enabled and dev.type == "cuda":
        with torch.autocast("cuda", dtype=dtype or torch.bfloat16):
            yield
    else:
        yield
