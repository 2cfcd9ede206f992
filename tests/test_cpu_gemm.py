"""oneDNN GEMMs for CPU inference (``segmenter.modeling.blocked_attention.cpu_linear``) and their scope.

Video tracking runs its linear layers through ``cpu_linear`` (memory attention, memory encoder,
and the image encoder inside ``fast_cpu_gemm``); everything else keeps PyTorch's ``F.linear``,
bit for bit. Small random shapes: checks of values and of where each path runs.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segmenter.modeling.blocked_attention import cpu_linear, fast_cpu_gemm, linear
from segmenter.modeling.memory_attention import RoPEAttention


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("shape", [(37, 24), (2, 5, 24)])
def test_cpu_linear_equals_f_linear(bias, relu, shape):
    torch.manual_seed(len(shape) + 2 * bias + relu)
    x, w = torch.randn(*shape), torch.randn(40, 24)
    b = torch.randn(40) if bias else None
    with torch.inference_mode():
        got = cpu_linear(x, w, b, relu=relu)
    want = F.linear(x, w, b)
    want = want.relu() if relu else want
    assert got.shape == want.shape == (*shape[:-1], 40)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


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
