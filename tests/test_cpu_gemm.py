"""oneDNN GEMMs for CPU inference (``segmenter.modeling.blocked_attention.cpu_linear``) and their scope.

Video tracking (``VideoPredictor(exact=False)``, the default) runs the image encoder, memory
attention and memory encoder inside ``fast_cpu_gemm``, where their products go through oneDNN;
everything else, and ``exact=True`` (the compat predictor's default), keeps PyTorch's GEMMs, bit for
bit. Small random shapes: checks of values and of where each path runs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import segmenter.modeling.blocked_attention as blocked_attention
from segmenter import VideoPredictor, build_sam
from segmenter.modeling.blocked_attention import blocked_mlp, cpu_linear, fast_cpu_gemm, linear
from segmenter.modeling.memory_attention import RoPEAttention


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("shape", [(37, 24), (2, 5, 24)])
def test_cpu_linear_equals_f_linear(bias, relu, shape):
    torch.manual_seed(len(shape) + 2 * bias + relu)
    x, w = torch.randn(*shape), torch.randn(40, 24)
    b = torch.randn(40) if bias else None
    with torch.inference_mode():
        with fast_cpu_gemm():
            got = cpu_linear(x, w, b, relu=relu)
        outside = cpu_linear(x, w, b, relu=relu)
    want = F.linear(x, w, b)
    want = want.relu() if relu else want
    assert got.shape == want.shape == (*shape[:-1], 40)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert torch.equal(outside, want)  # outside the scope: PyTorch's GEMM, bit for bit


def test_blocked_mlp_outside_the_scope_is_the_reference_order():
    torch.manual_seed(3)
    l1, l2, x = torch.nn.Linear(32, 128), torch.nn.Linear(128, 32), torch.randn(2, 700, 32)
    with torch.inference_mode():
        want = l2(F.relu(l1(x)))
        exact = blocked_mlp(x, l1, l2, rows=512)
        with fast_cpu_gemm():
            fast = blocked_mlp(x, l1, l2, rows=512)
    assert torch.equal(exact, want)
    torch.testing.assert_close(fast, want, atol=1e-5, rtol=1e-5)


def test_cpu_linear_other_dtypes_take_f_linear():
    torch.manual_seed(0)
    x, w, b = torch.randn(9, 16).bfloat16(), torch.randn(8, 16).bfloat16(), torch.randn(8).bfloat16()
    assert torch.equal(cpu_linear(x, w, b), F.linear(x, w, b))


def test_linear_is_the_layer_outside_the_scope_and_with_autograd():
    torch.manual_seed(1)
    layer, x = torch.nn.Linear(64, 96), torch.randn(300, 64)
    with torch.inference_mode():
        outside = linear(layer, x)
        with fast_cpu_gemm():
            inside = linear(layer, x)
            assert torch.equal(inside, cpu_linear(x, layer.weight, layer.bias))
            with fast_cpu_gemm(False):  # nested: switched off again
                assert torch.equal(linear(layer, x), layer(x))
        assert torch.equal(outside, layer(x))  # the reference's GEMM, bit for bit
    torch.testing.assert_close(inside, outside, atol=1e-5, rtol=1e-5)
    with fast_cpu_gemm():  # autograd on: the module itself, so gradients flow
        y = linear(layer, x.requires_grad_())
    y.sum().backward()
    assert x.grad is not None and torch.equal(y.detach(), layer(x).detach())


def test_fast_cpu_gemm_scope_resets_after_an_error():
    layer, x = torch.nn.Linear(8, 8), torch.randn(4, 8)
    with pytest.raises(RuntimeError, match="boom"), fast_cpu_gemm():
        raise RuntimeError("boom")
    with torch.inference_mode():
        assert torch.equal(linear(layer, x), layer(x))


@pytest.mark.parametrize("heads", [1, 2])
def test_self_attention_cpu_equals_forward(heads):
    torch.manual_seed(heads)
    attn = RoPEAttention(64, heads).eval()
    x = torch.randn(3, 48, 64)  # 6 x 8 grid
    with torch.inference_mode():
        fast = attn.self_attention_cpu(x, (6, 8))
        exact = attn(x, x, x, feat_size=(6, 8))
    assert fast.shape == exact.shape == (3, 48, 64)
    torch.testing.assert_close(fast, exact, atol=1e-5, rtol=1e-5)


class _CountingOp:
    def __init__(self, op) -> None:
        self.op, self.calls = op, 0

    def __call__(self, *args):
        self.calls += 1
        return self.op(*args)


def test_video_predictor_exact_switch(monkeypatch):
    """exact=False (default) runs oneDNN products on every tracked frame; exact=True never does.
    Both agree closely on a few frames (float32 rounding of another GEMM library)."""
    torch.manual_seed(0)
    model = build_sam("sam2.1_hiera_tiny", device="cpu", image_size=128)
    frames = [np.random.default_rng(t).integers(0, 255, (64, 96, 3), dtype=np.uint8) for t in range(4)]
    results, calls = {}, {}
    for exact in (True, False):
        counter = _CountingOp(blocked_attention._LINEAR) if blocked_attention._LINEAR is not None else None
        monkeypatch.setattr(blocked_attention, "_LINEAR", counter)
        pred = VideoPredictor(model, exact=exact)
        state = pred.init_state(frames)
        with torch.inference_mode():
            pred.add_new_points_or_box(state, 0, 1, box=[10, 10, 60, 50])
            results[exact] = torch.cat([m for _, _, m in pred.propagate_in_video(state)])
        calls[exact] = counter.calls if counter is not None else 0
    assert calls[True] == 0
    if blocked_attention._LINEAR is None:  # a PyTorch build without oneDNN: both modes are PyTorch's GEMMs
        assert calls[False] == 0 and torch.equal(results[True], results[False])
    else:
        assert calls[False] > 0
        assert (results[True] - results[False]).abs().max() < 1e-3
    assert not blocked_attention._FAST_GEMM.get()  # the scope ended with each step


def test_cpu_autocast_keeps_its_own_products():
    """Under CPU autocast the scope steps aside: autocast's bf16 GEMMs, as outside it."""
    torch.manual_seed(2)
    layer, x = torch.nn.Linear(32, 16), torch.randn(5, 32)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        outside = linear(layer, x)
        with fast_cpu_gemm():
            inside = linear(layer, x)
            raw = cpu_linear(x, layer.weight, layer.bias)
        want = F.linear(x, layer.weight, layer.bias)
    assert outside.dtype == inside.dtype == raw.dtype == torch.bfloat16
    assert torch.equal(inside, outside) and torch.equal(raw, want)
