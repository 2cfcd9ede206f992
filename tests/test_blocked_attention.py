"""The cache-blocked CPU kernels of the memory attention against plain float64 arithmetic.

The reference comparison (``test_parity_memory.py``) runs SAM 2's shapes; these tests push the
block bookkeeping through its corners: frames split into several key blocks or grouped several
to a block, uneven query chunks, pointer tokens, several heads, shared queries, bf16 memories.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segmenter.modeling.blocked_attention import blocked_mlp, folded_memory_attention, key_blocks
from segmenter.modeling.memory_attention import MemoryAttention, RoPEAttention
from segmenter.modeling.memory_encoder import MemoryEncoder
from segmenter.modeling.rope import AxialRoPE, apply_rope


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    "num_keys,num_rope,grid_len,k_block",
    [(7 * 1024 + 64, 7 * 1024, 1024, 2048), (7 * 4096 + 64, 7 * 4096, 4096, 2048),
     (3 * 2304, 3 * 2304, 2304, 2048), (5 * 60 + 7, 5 * 60, 60, 16), (4 * 60, 4 * 60, 60, 128), (9, 0, 60, 4)],
)
def test_key_blocks_cover_every_key_once_within_frames(num_keys, num_rope, grid_len, k_block):
    blocks = key_blocks(num_keys, num_rope, grid_len, k_block)
    covered = [j for start, stop, _ in blocks for j in range(start, stop)]
    assert covered == list(range(num_keys))
    for start, stop, offset in blocks:
        assert stop - start <= max(k_block, grid_len * (k_block // grid_len))
        if offset is None:  # pointer tokens: after the frames, not rotated
            assert start >= num_rope
        elif offset == -1:  # whole frames
            assert start % grid_len == 0 and (stop - start) % grid_len == 0 and stop <= num_rope
        else:  # part of one frame
            assert start % grid_len == offset and (start // grid_len) == ((stop - 1) // grid_len)
    with pytest.raises(ValueError, match="whole frames"):
        key_blocks(100, 50, 60)


def _naive(q, k_in, v_in, weight, bias, table, num_rope):  # float64 softmax(q k^T / sqrt(d)) v
    heads, d = q.shape[1], q.shape[-1]
    k = F.linear(k_in.double(), weight.double(), bias.double()).unflatten(-1, (heads, d)).transpose(1, 2)
    rot = apply_rope(k[..., :num_rope, :].float(), table).double()  # the rotation itself runs in fp32
    k = torch.cat([rot, k[..., num_rope:, :]], dim=-2)
    scores = (q.double() @ k.transpose(-1, -2)) * d**-0.5
    return scores.softmax(-1) @ v_in.double()[:, None]


@pytest.mark.parametrize(
    "heads,q_batch,k_block,q_block,pointers",
    [(1, 3, 16, 7, 5), (1, 1, 128, 64, 0), (2, 3, 40, 25, 3), (2, 1, 2048, 512, 8)],
)
def test_folded_attention_matches_float64(heads, q_batch, k_block, q_block, pointers):
    grid, frames, batch, ckv, d = (6, 10), 3, 3, 8, 16  # non-square 60-token grid
    n = grid[0] * grid[1]
    g = _gen(heads * 100 + k_block)
    q = apply_rope(torch.randn(q_batch, heads, n, d, generator=g), AxialRoPE(d).table(*grid, torch.device("cpu")))
    k_in = torch.randn(batch, frames * n + pointers, ckv, generator=g)
    v_in = torch.randn(batch, frames * n + pointers, ckv, generator=g)
    weight, bias = torch.randn(heads * d, ckv, generator=g), torch.randn(heads * d, generator=g)
    table = AxialRoPE(d).table(*grid, torch.device("cpu"))
    out = folded_memory_attention(q, k_in, v_in, weight, bias, table, frames * n, q_block=q_block, k_block=k_block)
    expected = _naive(q.expand(batch, -1, -1, -1), k_in, v_in, weight, bias, table, frames * n)
    assert out.shape == (batch, heads, n, ckv) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected, atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("heads,kv_dim", [(1, 64), (2, 32)])
@pytest.mark.parametrize("shared_queries", [False, True])
def test_rope_attention_blocked_equals_exact(heads, kv_dim, shared_queries):
    torch.manual_seed(heads + kv_dim)
    attn = RoPEAttention(256, heads, kv_in_dim=kv_dim, rope_k_repeat=True).eval()
    grid, frames, batch, pointers = (8, 12), 3, 3, 4
    n = grid[0] * grid[1]
    q = torch.randn(1 if shared_queries else batch, n, 256)
    k = torch.randn(batch, frames * n + pointers, kv_dim).bfloat16()  # memories are stored in bf16
    v = torch.randn(batch, frames * n + pointers, kv_dim).bfloat16()
    with torch.inference_mode():
        exact = attn(q, k, v, num_k_exclude_rope=pointers, feat_size=grid)
        blocked = attn(q, k, v, num_k_exclude_rope=pointers, feat_size=grid, blocked=True)
    assert blocked.shape == exact.shape == (batch, n, 256)
    torch.testing.assert_close(blocked, exact, atol=1e-5, rtol=1e-5)
    assert not torch.equal(blocked, exact)  # the blocked path really ran (different rounding)


def test_blocked_path_only_where_it_applies():
    torch.manual_seed(0)
    self_attn = RoPEAttention(64, 1).eval()  # keys as wide as a head: nothing to fold
    x = torch.randn(2, 16, 64)
    with torch.inference_mode():
        assert torch.equal(self_attn(x, x, x, blocked=True), self_attn(x, x, x))
    cross = RoPEAttention(64, 1, kv_in_dim=16, rope_k_repeat=True)
    k = torch.randn(2, 32, 16, requires_grad=True)
    out = cross(x, k, k, blocked=True)  # autograd on: the in-place kernel must not run
    out.sum().backward()
    assert k.grad is not None and k.grad.abs().sum() > 0


def test_memory_attention_blocked_flag(request):
    torch.manual_seed(1)
    model = MemoryAttention(num_layers=2, dim_feedforward=128).eval()
    hw, frames, batch = 64, 2, 3
    args = (torch.randn(hw, 1, 256), torch.randn(hw, 1, 256), torch.randn(frames * hw + 8, batch, 64),
            torch.randn(frames * hw + 8, batch, 64), 8)
    with torch.inference_mode():
        assert model.blocked  # on by default
        fast = model(*args)
        model.blocked = False
        exact = model(*args)
    diff = (fast - exact).abs().max().item()
    request.node.user_properties.append(("max_abs_diff[blocked vs exact]", diff))
    assert 0 < diff < 1e-5


@pytest.mark.parametrize("rows", [7, 512])
def test_blocked_mlp_equals_plain(rows):
    torch.manual_seed(rows)
    l1, l2 = torch.nn.Linear(32, 96), torch.nn.Linear(96, 32)
    x = torch.randn(2, 50, 32)
    with torch.inference_mode():
        torch.testing.assert_close(blocked_mlp(x, l1, l2, rows=rows), l2(F.relu(l1(x))), atol=1e-6, rtol=1e-6)


def test_memory_encoder_chunks_and_shared_frame():
    torch.manual_seed(2)
    enc = MemoryEncoder().eval()
    feat, masks = torch.randn(1, 256, 8, 8), torch.randn(3, 1, 128, 128)
    with torch.inference_mode():
        one_by_one = enc(feat, masks, chunk=1)
        at_once = enc(feat.expand(3, -1, -1, -1), masks, chunk=3)
    torch.testing.assert_close(one_by_one["vision_features"], at_once["vision_features"], atol=1e-5, rtol=1e-5)
    assert one_by_one["vision_pos_enc"][0].shape == (3, 64, 8, 8)
    torch.testing.assert_close(one_by_one["vision_pos_enc"][0], at_once["vision_pos_enc"][0])
    with pytest.raises(ValueError, match="feature maps"):
        enc(torch.randn(2, 256, 8, 8), masks)


def test_cpu_autocast_takes_the_plain_path():
    torch.manual_seed(3)
    model = MemoryAttention(num_layers=1, dim_feedforward=64).eval()
    args = (torch.randn(16, 1, 256), None, torch.randn(40, 2, 64), torch.randn(40, 2, 64), 8)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        fast = model(*args)
        model.blocked = False
        exact = model(*args)
    assert fast.dtype == exact.dtype and torch.equal(fast, exact)


@pytest.mark.parametrize("multimask", [True, False])
def test_mask_decoder_chunks_per_object_images_bit_identical(multimask):
    """Video heads: one memory-conditioned embedding and high-res features per object
    (repeat_image=False); chunked CPU decoding equals decoding all objects at once."""
    from segmenter.config import load_model_config
    from segmenter.modeling.mask_decoder import MaskDecoder

    torch.manual_seed(4)
    decoder = MaskDecoder(load_model_config("sam2.1_hiera_tiny", image_size=256).decoder).eval()
    b, side = 5, 16
    image = torch.randn(b, 256, side, side)
    high_res = [torch.randn(b, 32, 4 * side, 4 * side), torch.randn(b, 64, 2 * side, 2 * side)]
    args = (image, torch.randn(1, 256, side, side), torch.randn(b, 3, 256), torch.randn(1, 256, side, side))
    outs = {}
    with torch.inference_mode():
        for chunk_bytes in (0, 256 * side * side * 4):  # one object's image tokens per chunk
            decoder.chunk_bytes = chunk_bytes
            outs[chunk_bytes] = decoder(*args, multimask_output=multimask, repeat_image=False,
                                        high_res_features=high_res)
        assert len(decoder._prompt_chunks(b, 9, image)) == 2  # 9 tokens: >= 2 per chunk -> 2 + 3
    for whole, chunked in zip(*outs.values()):
        assert torch.equal(whole, chunked)
