"""Parity of our SAM 2 image encoder (Hiera trunk + FPN neck) with Meta's reference.

The reference runs on random weights; ours loads its state dict strictly, gets the same input
and must reproduce every output tensor (fp32, max |diff| <= 1e-5).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from segmenter.config import load_model_config
from segmenter.modeling.hiera import Hiera
from segmenter.modeling.image_encoder import ImageEncoder, build_image_encoder
from reference import REFERENCE_CONFIGS, reference_sam2

TOL = 1e-5
OUTPUT_KEYS = {"vision_features", "vision_pos_enc", "backbone_fpn"}


def _ours_from(name: str, image_size: int, ref_encoder: nn.Module) -> ImageEncoder:
    ours = build_image_encoder(load_model_config(name, image_size=image_size)).eval()
    ours.load_state_dict(ref_encoder.state_dict(), strict=True)
    return ours


def _max_abs_diff(expected: dict, got: dict) -> float:
    """Max |diff| over every output tensor, after checking that the structures are identical."""
    assert set(expected) == set(got) == OUTPUT_KEYS
    pairs = [(expected["vision_features"], got["vision_features"])]
    for key in ("backbone_fpn", "vision_pos_enc"):
        assert len(expected[key]) == len(got[key]) == 3
        pairs += zip(expected[key], got[key])
    for a, b in pairs:
        assert a.shape == b.shape and a.dtype == b.dtype
    return max((a - b).abs().max().item() for a, b in pairs)


def _check_shapes(out: dict, batch: int, height: int, width: int) -> None:
    assert out["vision_features"].shape == (batch, 256, height // 16, width // 16)
    assert out["vision_features"] is out["backbone_fpn"][-1]
    for level, stride in enumerate((4, 8, 16)):
        for key in ("backbone_fpn", "vision_pos_enc"):
            assert out[key][level].shape == (batch, 256, height // stride, width // stride)


@pytest.mark.parametrize(
    ("name", "size", "batch"),
    [
        ("sam2.1_hiera_tiny", 256, 1),  # 16x16 / 8x8 grids: windows 14 and 7 need padding
        pytest.param("sam2.1_hiera_tiny", 256, 2, marks=pytest.mark.slow),
        ("sam2.1_hiera_tiny", 512, 1),
        pytest.param("sam2.1_hiera_tiny", 1024, 1, marks=pytest.mark.slow),
        ("sam2_hiera_small", 256, 1),
        pytest.param("sam2_hiera_small", 512, 1, marks=pytest.mark.slow),
        pytest.param("sam2.1_hiera_base_plus", 256, 1, marks=pytest.mark.slow),  # 14x14 background pos-embed, 2 heads, 2-block stage 1
    ],
)
def test_image_encoder_matches_reference(name: str, size: int, batch: int) -> None:
    ref = reference_sam2(name, size).image_encoder
    ours = _ours_from(name, size, ref)
    x = torch.randn(batch, 3, size, size)
    with torch.inference_mode():
        expected = ref(x)
        got = ours(x)
    _check_shapes(got, batch, size, size)
    assert _max_abs_diff(expected, got) <= TOL


@pytest.mark.parametrize("name", ["sam2.1_hiera_tiny", pytest.param("sam2.1_hiera_base_plus", marks=pytest.mark.slow)])
@pytest.mark.parametrize(
    ("batch", "height", "width"),
    [
        (1, 96, 96),  # grids smaller than one window; a 3x3 map after the last q-pool
        (1, 64, 512),  # a single row of windows
        (3, 160, 96),  # batch of 3, non-square, odd window counts
    ],
)
def test_odd_shapes_match_reference(name: str, batch: int, height: int, width: int) -> None:
    ref = reference_sam2(name, 256).image_encoder
    ours = _ours_from(name, 256, ref)
    x = torch.randn(batch, 3, height, width)
    with torch.inference_mode():
        expected = ref(x)
        got = ours(x)
    _check_shapes(got, batch, height, width)
    assert _max_abs_diff(expected, got) <= TOL


@pytest.mark.slow
def test_grad_mode_non_square_matches_reference() -> None:
    """The plain path (used with autograd and on GPUs) on a non-square input; gradients flow."""
    ref = reference_sam2("sam2.1_hiera_tiny", 256).image_encoder
    ours = _ours_from("sam2.1_hiera_tiny", 256, ref)
    x = torch.randn(1, 3, 224, 320)
    with torch.no_grad():
        expected = ref(x)
    got = ours(x)
    _check_shapes(got, 1, 224, 320)
    assert _max_abs_diff(expected, got) <= TOL
    got["vision_features"].sum().backward()
    trunk = ours.trunk
    for p in (trunk.pos_embed, trunk.pos_embed_window, trunk.blocks[0].attn.qkv.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_pos_embed_cache_follows_weight_updates() -> None:
    from sam2.modeling.backbones.hieradet import Hiera as RefHiera

    def expected_pe(trunk: Hiera, h: int, w: int) -> torch.Tensor:
        # the reference's own routine, run on our parameters (same attribute names)
        return RefHiera._get_pos_embed(trunk, (h, w))

    trunk = Hiera(load_model_config("sam2.1_hiera_tiny").hiera).eval()
    gen = torch.Generator().manual_seed(0)
    fresh = {k: torch.randn(v.shape, generator=gen) for k, v in trunk.state_dict().items()}
    with torch.inference_mode():
        trunk.load_state_dict(fresh)
        pe = trunk.pos_embed_for(64, 64)
        assert trunk.pos_embed_for(64, 64) is pe  # cached per grid size
        assert trunk.pos_embed_for(32, 48).shape == (1, 32, 48, 96)
        assert (pe - expected_pe(trunk, 64, 64)).abs().max().item() <= TOL

        # new weights loaded like a checkpoint, then an in-place edit: no stale cache
        pos = {k: torch.randn(v.shape, generator=gen) for k, v in fresh.items() if "pos" in k}
        trunk.load_state_dict(pos, strict=False)
        assert (trunk.pos_embed_for(64, 64) - expected_pe(trunk, 64, 64)).abs().max() <= TOL
        trunk.pos_embed_window.mul_(2.0)
        assert (trunk.pos_embed_for(64, 64) - expected_pe(trunk, 64, 64)).abs().max() <= TOL
        assert not torch.allclose(trunk.pos_embed_for(64, 64), pe)
        trunk.half()
        assert trunk.pos_embed_for(64, 64).dtype == torch.float16


def _reference_image_encoder(name: str) -> nn.Module:
    """The official image encoder built from Meta's own hydra config (weights uninitialised)."""
    import sam2  # noqa: F401  (registers the reference's hydra config module)
    from hydra import compose
    from hydra.utils import instantiate

    return instantiate(compose(config_name=REFERENCE_CONFIGS[name]).model.image_encoder)


@pytest.fixture()
def _no_weight_init(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip the random init of Linear/Conv weights: only names and shapes are compared."""
    for fn in ("kaiming_uniform_", "uniform_"):
        monkeypatch.setattr(nn.init, fn, lambda t, *args, **kwargs: t)


@pytest.mark.usefixtures("_no_weight_init")
@pytest.mark.parametrize("name", sorted(REFERENCE_CONFIGS))
def test_structure_matches_official_config(name: str) -> None:
    ref = _reference_image_encoder(name)
    with torch.device("meta"):
        ours = build_image_encoder(load_model_config(name))
    expected = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == expected
    assert ours.trunk.channel_list == ref.trunk.channel_list == ref.neck.backbone_channel_list
    assert ours.scalp == ref.scalp
    assert ours.neck.fpn_top_down_levels == set(ref.neck.fpn_top_down_levels)
    assert ours.neck.fpn_interp_model == ref.neck.fpn_interp_model
    for mine, theirs in zip(ours.trunk.blocks, ref.trunk.blocks, strict=True):
        assert mine.window_size == theirs.window_size
        assert mine.attn.num_heads == theirs.attn.num_heads
        assert (mine.q_stride is None) == (theirs.q_stride is None)

