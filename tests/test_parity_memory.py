"""Parity of the memory modules (RoPE, memory attention, memory encoder) with Meta's reference.

The reference modules come from ``reference_sam2`` (random weights); ours load their state dicts
strictly. Measured max |diff| values are attached to each test as the ``max_abs_diff`` property
(``--junitxml`` with ``-o junit_family=legacy`` writes them).
"""

from __future__ import annotations

import copy

import pytest
import torch
from sam2.modeling.position_encoding import apply_rotary_enc, compute_axial_cis

from reference import reference_sam2
from segmenter.config import load_model_config
from segmenter.modeling.memory_attention import MemoryAttention, RoPEAttention
from segmenter.modeling.memory_encoder import MemoryEncoder
from segmenter.modeling.rope import AxialRoPE, apply_rope

TOL = 1e-5
D_MODEL, MEM_DIM = 256, 64


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


def _check(request, name: str, ours: torch.Tensor, ref: torch.Tensor, tol: float = TOL) -> None:
    diff = _max_diff(ours, ref)
    request.node.user_properties.append((f"max_abs_diff[{name}]", diff))
    assert diff <= tol, f"{name}: max |diff| {diff:.3g} > {tol}"


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def reference() -> torch.nn.Module:
    return reference_sam2("sam2.1_hiera_tiny", image_size=512)


@pytest.fixture(scope="module")
def memory_attention(reference) -> MemoryAttention:
    cfg = load_model_config("sam2.1_hiera_tiny", image_size=512)
    ours = MemoryAttention.from_config(cfg.memory, cfg.neck.d_model).eval()
    ours.load_state_dict(reference.memory_attention.state_dict(), strict=True)
    return ours


@pytest.fixture(scope="module")
def memory_encoder(reference) -> MemoryEncoder:
    cfg = load_model_config("sam2.1_hiera_tiny", image_size=512)
    ours = MemoryEncoder.from_config(cfg.memory, cfg.neck.d_model, cfg.backbone_stride).eval()
    ours.load_state_dict(reference.memory_encoder.state_dict(), strict=True)
    return ours


def _memory_inputs(side: int, frames: int, pointers: int, batch: int, seed: int) -> dict:
    """Sequence-first inputs as the tracking loop builds them; each 256-d pointer -> 4 tokens."""
    hw = side * side
    ptr = _randn(pointers, batch, D_MODEL, seed=seed + 4)  # (P, B, 256)
    ptr_tokens = ptr.reshape(pointers, batch, D_MODEL // MEM_DIM, MEM_DIM).permute(0, 2, 1, 3).flatten(0, 1)
    ptr_pos = torch.zeros_like(ptr_tokens)
    return {
        "curr": _randn(hw, batch, D_MODEL, seed=seed),
        "curr_pos": _randn(hw, batch, D_MODEL, seed=seed + 1).tanh(),
        "memory": torch.cat([_randn(frames * hw, batch, MEM_DIM, seed=seed + 2), ptr_tokens]),
        "memory_pos": torch.cat([_randn(frames * hw, batch, MEM_DIM, seed=seed + 3).tanh(), ptr_pos]),
        "num_obj_ptr_tokens": ptr_tokens.shape[0],
    }


def _reference_per_object(reference, inp: dict) -> torch.Tensor:
    """The reference run one object at a time (as its video predictor does)."""
    outs = []
    for b in range(inp["memory"].shape[1]):
        obj = slice(b, b + 1)
        outs.append(
            reference.memory_attention(
                curr=inp["curr"][:, obj],
                memory=inp["memory"][:, obj].float(),
                curr_pos=inp["curr_pos"][:, obj],
                memory_pos=inp["memory_pos"][:, obj].float(),
                num_obj_ptr_tokens=inp["num_obj_ptr_tokens"],
            )
        )
    return torch.cat(outs, dim=1)


def _ours(model: MemoryAttention, inp: dict) -> torch.Tensor:
    return model(inp["curr"], inp["curr_pos"], inp["memory"], inp["memory_pos"], inp["num_obj_ptr_tokens"])


# ---------------------------------------------------------------------------------------- RoPE


@pytest.mark.parametrize("height,width", [(32, 32), (24, 40)])
def test_rope_table_and_rotation_bit_exact(height, width, request):
    rope = AxialRoPE(D_MODEL)
    ref_cis = compute_axial_cis(D_MODEL, end_x=width, end_y=height)  # (HW, D/2) complex
    table = rope.table(height, width, torch.device("cpu"))
    assert torch.equal(table, torch.view_as_real(ref_cis))
    assert rope.table(height, width, torch.device("cpu")) is table  # cached per shape

    hw = height * width
    q = _randn(2, 1, hw, D_MODEL, seed=1)
    k = _randn(2, 1, 3 * hw, D_MODEL, seed=2)  # three memory frames
    ref_q, ref_k = apply_rotary_enc(q, k, ref_cis, repeat_freqs_k=True)
    for use_complex in (True, False):  # the real path is what MPS runs
        _check(request, f"q complex={use_complex}", apply_rope(q, table, use_complex), ref_q, 0.0)
        _check(request, f"k complex={use_complex}", apply_rope(k, table, use_complex), ref_k, 0.0)
    ref_q16, _ = apply_rotary_enc(q.bfloat16(), k.bfloat16(), ref_cis, repeat_freqs_k=True)
    out16 = rope(q.bfloat16(), (height, width))
    assert out16.dtype == torch.bfloat16
    _check(request, "q bf16", out16, ref_q16, 0.0)


def test_rope_attention_non_square_grid(memory_attention, reference, request):
    height, width = 24, 40  # H*W used by no other test: the reference keeps whatever table is set
    ref_attn = copy.deepcopy(reference.memory_attention.layers[0].cross_attn_image)
    ref_attn.freqs_cis = compute_axial_cis(D_MODEL, end_x=width, end_y=height)
    ours = memory_attention.layers[0].cross_attn_image
    hw = height * width
    q = _randn(2, hw, D_MODEL, seed=5)
    k = _randn(2, 2 * hw + 8, MEM_DIM, seed=6)
    v = _randn(2, 2 * hw + 8, MEM_DIM, seed=7)
    with torch.no_grad():
        out = ours(q, k, v, num_k_exclude_rope=8, feat_size=(height, width))
        expected = ref_attn(q, k, v, num_k_exclude_rope=8)
    _check(request, "24x40", out, expected)
    with pytest.raises(ValueError, match="square"):
        ours(q, k, v, num_k_exclude_rope=8)  # the grid cannot be guessed from 960 tokens


def test_rope_attention_rejects_inconsistent_keys():
    attn = RoPEAttention(64, num_heads=2).eval()  # self-attention: no key repetition
    x = torch.randn(1, 16, 64)
    assert attn(x, x, x).shape == (1, 16, 64)
    with pytest.raises(ValueError, match="rope_k_repeat"):
        attn(x, torch.randn(1, 32, 64), torch.randn(1, 32, 64))
    with pytest.raises(ValueError, match="grid"):
        attn(x, x, x, feat_size=(3, 4))


# ------------------------------------------------------------------------------ memory attention


@pytest.mark.parametrize(
    "side,frames,pointers,batch",
    [
        (32, 1, 0, 1),  # first tracked frame: one memory frame, no pointers
        (32, 3, 4, 3),  # three frames + 4 pointers (16 tokens), three objects in one call
        pytest.param(64, 1, 1, 1, marks=pytest.mark.slow),  # 1024 px grid: the reference recomputes its RoPE table again
    ],
)
@pytest.mark.parametrize("blocked", [True, pytest.param(False, marks=pytest.mark.slow)], ids=["blocked", "exact"])
@torch.no_grad()
def test_memory_attention_matches_reference(
    memory_attention, reference, side, frames, pointers, batch, blocked, request
):
    """Default (cache-blocked CPU kernels): equal to fp32 rounding; ``blocked=False``: bit-identical."""
    inp = _memory_inputs(side, frames, pointers, batch, seed=10 * side + frames)
    cached_before = dict(memory_attention.layers[0].self_attn.rope._cache)
    memory_attention.blocked = blocked
    try:
        out = _ours(memory_attention, inp)
    finally:
        memory_attention.blocked = True
    expected = _reference_per_object(reference, inp)
    assert out.shape == (side * side, batch, D_MODEL)
    name = f"{side}x{side} frames={frames} ptr_tokens={4 * pointers} B={batch}"
    _check(request, name, out, expected, TOL if blocked else 0.0)

    # the reference really used a table for this grid (it was built for 64x64 at 512 px too)
    for layer in reference.memory_attention.layers:
        assert layer.self_attn.freqs_cis.shape[0] == side * side
    # ours: one table cache shared by every attention module, one entry per grid
    rope = memory_attention.layers[0].self_attn.rope
    for layer in memory_attention.layers:
        assert layer.self_attn.rope is rope and layer.cross_attn_image.rope is rope
    assert (side, side, torch.device("cpu")) in rope._cache
    assert all(rope._cache[key] is table for key, table in cached_before.items())  # not rebuilt


@pytest.mark.slow
@torch.no_grad()
def test_memory_attention_shared_frame_features(memory_attention, reference, request):
    """A batch-1 ``curr`` (all objects on the same frame) equals passing it once per object."""
    inp = _memory_inputs(32, 2, 2, 3, seed=7)
    inp["curr"], inp["curr_pos"] = inp["curr"][:, :1], inp["curr_pos"][:, :1]
    out = _ours(memory_attention, inp)
    expanded = {**inp, "curr": inp["curr"].expand(-1, 3, -1), "curr_pos": inp["curr_pos"].expand(-1, 3, -1)}
    _check(request, "shared vs expanded", out, _ours(memory_attention, expanded))
    _check(request, "shared vs reference", out, _reference_per_object(reference, expanded))
    with pytest.raises(ValueError, match="batch"):
        _ours(memory_attention, {**inp, "curr": inp["curr"].expand(-1, 2, -1)})


@pytest.mark.parametrize("pos_dtype", [torch.float32, pytest.param(torch.bfloat16, marks=pytest.mark.slow)])
@torch.no_grad()
def test_memory_attention_accepts_bf16_memory(memory_attention, reference, pos_dtype, request):
    """bf16 memories (as the video predictor stores them) with an fp32 model, no pointers."""
    inp = _memory_inputs(32, 2, 0, 2, seed=3)
    inp["memory"] = inp["memory"].bfloat16()
    inp["memory_pos"] = inp["memory_pos"].to(pos_dtype)
    out = _ours(memory_attention, inp)
    assert out.dtype == torch.float32
    _check(request, f"bf16 memory, {pos_dtype} pos", out, _reference_per_object(reference, inp))


# -------------------------------------------------------------------------------- memory encoder


@pytest.mark.parametrize("image_size", [512, 1024])
@pytest.mark.parametrize("skip_mask_sigmoid", [False, True])
@torch.no_grad()
def test_memory_encoder_matches_reference(memory_encoder, reference, image_size, skip_mask_sigmoid, request):
    side = image_size // 16
    pix_feat = _randn(2, D_MODEL, side, side, seed=image_size)
    masks = 4 * _randn(2, 1, image_size, image_size, seed=image_size + 1)  # mask logits
    if skip_mask_sigmoid:  # as the tracking loop passes them: sigmoid * 20 - 10
        masks = torch.sigmoid(masks) * 20.0 - 10.0
    out = memory_encoder(pix_feat, masks, skip_mask_sigmoid=skip_mask_sigmoid)
    expected = reference.memory_encoder(pix_feat, masks, skip_mask_sigmoid=skip_mask_sigmoid)
    assert out["vision_features"].shape == (2, MEM_DIM, side, side)
    assert len(out["vision_pos_enc"]) == 1
    _check(request, "features", out["vision_features"], expected["vision_features"])
    _check(request, "pos", out["vision_pos_enc"][0], expected["vision_pos_enc"][0])


def test_mask_downsampler_layout(memory_encoder):
    convs = [m for m in memory_encoder.mask_downsampler.encoder if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 16, 64, 256, 256]  # stride 2, total stride 16
    assert [c.stride for c in convs] == [(2, 2)] * 4 + [(1, 1)]
    assert [c.padding for c in convs] == [(1, 1)] * 4 + [(0, 0)]


# ----------------------------------------------------------------------------------- SAM 2.0


def test_sam2_0_config_builds_and_loads_strict():
    cfg = load_model_config("sam2_hiera_tiny", image_size=512)
    assert cfg.version == "2.0"
    ref = reference_sam2("sam2_hiera_tiny", image_size=512)
    attention = MemoryAttention.from_config(cfg.memory, cfg.neck.d_model)
    encoder = MemoryEncoder.from_config(cfg.memory, cfg.neck.d_model, cfg.backbone_stride)
    attention.load_state_dict(ref.memory_attention.state_dict(), strict=True)
    encoder.load_state_dict(ref.memory_encoder.state_dict(), strict=True)
    for ours, theirs in [(attention, ref.memory_attention), (encoder, ref.memory_encoder)]:
        ref_shapes = {k: v.shape for k, v in theirs.state_dict().items()}
        assert {k: v.shape for k, v in ours.state_dict().items()} == ref_shapes
