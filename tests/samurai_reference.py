"""SAMURAI's own predictor (tests/third_party/samurai) on the installed sam2, for parity tests.

The vendored files import ``sam2.modeling.sam2_base`` and ``sam2.utils.kalman_filter``; they are
executed under distinct module names (``samurai_ref.*``) with those two ``sam2`` names pointing
at the vendored copies only while each file runs, so the installed ``sam2`` stays untouched.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from contextlib import contextmanager
from pathlib import Path

import torch

HERE = Path(__file__).parent / "third_party" / "samurai"
PACKAGE = "samurai_ref"


@contextmanager
def _aliases(mapping: dict[str, types.ModuleType]):
    saved = {name: sys.modules.get(name) for name in mapping}
    sys.modules.update(mapping)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _load(name: str, filename: str, aliases: dict[str, types.ModuleType]) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(f"{PACKAGE}.{name}", HERE / filename)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    with _aliases(aliases):
        spec.loader.exec_module(module)
    return module


def load() -> types.ModuleType:
    """The vendored ``sam2_video_predictor`` module (loaded once)."""
    done = sys.modules.get(f"{PACKAGE}.sam2_video_predictor")
    if done is not None:
        return done
    import sam2.modeling.sam2_base  # noqa: F401  (the installed one, imported first)

    package = types.ModuleType(PACKAGE)
    package.__path__ = [str(HERE)]
    sys.modules[PACKAGE] = package
    kalman = _load("kalman_filter", "kalman_filter.py", {})
    extra: dict[str, types.ModuleType] = {"sam2.utils.kalman_filter": kalman}
    try:
        import loguru  # noqa: F401
    except ImportError:  # imported by sam2_base.py, never used
        stub = types.ModuleType("loguru")
        stub.logger = None
        extra["loguru"] = stub
    base = _load("sam2_base", "sam2_base.py", extra)
    video = _load("sam2_video_predictor", "sam2_video_predictor.py", {"sam2.modeling.sam2_base": base})
    package.kalman_filter, package.sam2_base, package.sam2_video_predictor = kalman, base, video
    return video


def load_kalman() -> types.ModuleType:
    """The vendored ``kalman_filter`` module."""
    load()
    return sys.modules[f"{PACKAGE}.kalman_filter"]


def samurai_predictor(config: str, checkpoint: str, image_size: int, **keys: float | int | bool):
    """SAMURAI's ``SAM2VideoPredictor`` built by the installed ``build_sam2_video_predictor``.

    ``keys`` are SAMURAI's config keys (``samurai_mode=True``, ``kf_score_weight=0.25``...).
    """
    from sam2.build_sam import build_sam2_video_predictor

    load()
    overrides = [f"++model._target_={PACKAGE}.sam2_video_predictor.SAM2VideoPredictor", f"++model.image_size={image_size}"]
    overrides += [f"++model.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in keys.items()]
    pred = build_sam2_video_predictor(config, checkpoint, device="cpu", hydra_overrides_extra=overrides)
    if checkpoint is None:
        torch.manual_seed(0)
    forward = pred.memory_attention.forward

    def float_memory(curr, memory, curr_pos=None, memory_pos=None, num_obj_ptr_tokens=0):
        # bf16 memories on an fp32 CPU: cast as type promotion would (see tests/test_parity_video.py)
        return forward(
            curr=curr, memory=memory.float(), curr_pos=curr_pos, memory_pos=memory_pos.float(),
            num_obj_ptr_tokens=num_obj_ptr_tokens,
        )  # fmt: skip

    pred.memory_attention.forward = float_memory
    return pred


def patch_frames(monkeypatch, images: torch.Tensor, height: int, width: int) -> None:
    """Make SAMURAI's frame loader return ``images`` (N, 3, S, S)."""
    module = load()
    monkeypatch.setattr(module, "load_video_frames", lambda **_: (images, height, width))
