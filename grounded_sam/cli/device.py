"""``--device`` checked before any model loads, in the words of the command line.

:func:`device_option` (the option's callback) checks the spelling and whether the machine has the
device at all, without torch: it reads the NVIDIA driver through NVML (which, unlike the CUDA driver
API, does not initialise CUDA, so a later fork stays safe) and answers in milliseconds. It refuses
only what is certainly absent; what torch itself can use is checked by :func:`check_torch_device`
once torch loads for the models anyway (a CPU-only torch build on a machine with a GPU, say).
"""

from __future__ import annotations

import ctypes
import os
import platform

import typer

__all__ = ["DEVICES", "device_option", "cuda_device_count", "check_torch_device"]

DEVICES = "cpu, cuda, cuda:N or mps"
_FIX = "use --device cpu, or leave --device out for the best device there is"
_NVML = ("libnvidia-ml.so.1", "nvml.dll")
_CUDA_DRIVER = ("libcuda.so.1", "nvcuda.dll")


def device_option(value: str | None) -> str | None:
    """``--device``: ``None`` (the best device) or a device this machine may have; a usage error else."""
    if value is None or value == "auto":  # "auto": the default, as the Python API takes it
        return None
    kind, sep, index = value.partition(":")
    if not (value in ("cpu", "mps", "cuda") or (kind == "cuda" and sep and index.isdigit())):
        raise typer.BadParameter(f"{value!r} is not a device: use {DEVICES}")
    if kind == "cuda" and cuda_device_count() == 0:
        raise typer.BadParameter(f"{value!r}: this machine has no CUDA device (no NVIDIA driver answers); {_FIX}")
    if kind == "mps" and platform.system() != "Darwin":
        raise typer.BadParameter(f"{value!r}: MPS (Apple GPUs) exists on macOS only; {_FIX}")
    return value


def cuda_device_count() -> int | None:
    """CUDA devices the NVIDIA driver shows this process, read without torch; ``None`` when only
    torch can tell (no NVML but a CUDA driver, an AMD ROCm machine, an NVML error)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and (not visible.strip() or visible.strip().startswith("-1")):
        return 0  # devices hidden on purpose
    if platform.system() == "Darwin":
        return 0
    if os.path.exists("/dev/kfd"):  # ROCm: torch.cuda runs on AMD GPUs through HIP
        return None
    nvml = _load(_NVML)
    if nvml is None:
        return None if _load(_CUDA_DRIVER) is not None else 0  # e.g. Jetson: CUDA without NVML
    if nvml.nvmlInit_v2() != 0:
        return None
    try:
        count = ctypes.c_uint(0)
        return int(count.value) if nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) == 0 else None
    finally:
        nvml.nvmlShutdown()


def _load(names: tuple[str, ...]) -> ctypes.CDLL | None:
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def check_torch_device(device: str | None) -> None:
    """Whether torch can use ``device`` (imports torch: call it just before the models load); a usage
    error naming ``--device`` else."""
    if device is None or device == "cpu":
        return
    from gsam_runtime.device import resolve_device

    try:
        resolve_device(device)
    except (RuntimeError, ValueError):
        raise typer.BadParameter(f"{device!r}: {_torch_problem(device)}; {_FIX}", param_hint="--device") from None


def _torch_problem(device: str) -> str:
    """Why torch cannot use ``device``, in a user's words."""
    import torch

    if not device.startswith("cuda"):
        return f"torch {torch.__version__} finds no MPS device here"
    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        return f"this torch ({torch.__version__}) is built without CUDA"
    count = torch.cuda.device_count()
    if count == 0:
        return f"torch {torch.__version__} finds no CUDA device here"
    return f"this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
