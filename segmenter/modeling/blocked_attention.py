"""Cache-blocked CPU kernels for SAM 2's memory attention (inference only).

The cross-attention to the memory bank is the bulk of a tracked frame: every object's queries
(H*W tokens, 256 channels) attend to ~7 * H*W memory tokens whose keys and values are 64-channel
inputs projected to 256. Two rewrites, exact in real arithmetic, cut its work:

* Values are folded into the output projection. The softmax rows sum to one, so
  ``softmax(QK^T) (M Wv^T + bv) Wo^T + bo = (softmax(QK^T) M) (Wo Wv)^T + (Wo bv + bo)``:
  the attention-weighted sum runs on the 64 input channels instead of 256 (4x fewer FLOPs for
  that half of the attention) and the value projection of the whole memory disappears.
* Keys are projected and rotated one block at a time inside the loop, so the 256-channel keys
  of the whole memory are never written to (and read back from) main memory.

The softmax is computed block by block with a running maximum and sum ("online softmax", as in
FlashAttention) on ``q_block x k_block`` score tiles that stay in the L2 cache; on one CPU core
this runs ~0.65x the time of ``scaled_dot_product_attention`` + projections for SAM 2's shapes.
Results equal the reference order of operations to float32 rounding (~1e-7 relative).

Inside :func:`fast_cpu_gemm` (the video tracker's default), the products (projections, scores,
weighted sums, MLP) go through :func:`cpu_linear`, oneDNN's GEMM: PyTorch's float32
``F.linear``/``bmm`` use MKL, which runs slower kernels on non-Intel CPUs. Outside the scope every
product keeps PyTorch's GEMMs.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from segmenter.modeling.common import token_linear
from segmenter.modeling.rope import apply_rope

__all__ = ["folded_memory_attention", "key_blocks", "blocked_mlp", "cpu_linear", "fast_cpu_gemm", "linear"]

Q_BLOCK = 512  # query rows per score tile
K_BLOCK = 2048  # keys per score tile: 512 x 2048 fp32 scores = 4 MiB
MLP_ROWS = 512  # token rows per MLP chunk: the (rows, 2048) hidden tile stays in cache


def _onednn_linear():  # noqa: ANN202 -> the op, or None
    try:
        op = torch.ops.mkldnn._linear_pointwise
        if not torch.backends.mkldnn.is_available():
            return None
        op(torch.ones(1, 1), torch.ones(1, 1), None, "none", [], "")  # present and working
        return op
    except (AttributeError, RuntimeError):
        return None


_LINEAR = _onednn_linear()


def cpu_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, relu: bool = False) -> torch.Tensor:
    """``F.linear`` (then ReLU if ``relu``); inside :func:`fast_cpu_gemm`, float32 CPU inference
    goes through oneDNN where available.

    PyTorch sends float32 ``F.linear`` to MKL's sgemm, which picks slower kernels on non-Intel
    CPUs (on the AMD EPYC bench machine: 46-60 GFLOP/s vs oneDNN's 69-87 for the memory
    attention's shapes); oneDNN's JIT kernels follow the CPU's instruction set on any vendor.
    The same products, summed in another order: results agree to float32 rounding.
    """
    if fast_gemm_enabled(x) and x.dtype == weight.dtype == torch.float32:
        return _LINEAR(x, weight, bias, "relu" if relu else "none", [], "")
    y = F.linear(x, weight, bias)
    return y.relu_() if relu else y


_FAST_GEMM = contextvars.ContextVar("segmenter_fast_cpu_gemm", default=False)


def fast_gemm_enabled(x: torch.Tensor) -> bool:
    """Whether products on ``x`` take oneDNN: inside :func:`fast_cpu_gemm`, CPU, no autograd, and no
    CPU autocast (its bf16 products are autocast's to choose; the oneDNN op would bypass it)."""
    return (
        _LINEAR is not None
        and _FAST_GEMM.get()
        and x.device.type == "cpu"
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
    )


@contextlib.contextmanager
def fast_cpu_gemm(enabled: bool = True) -> Iterator[None]:
    """Inside: CPU inference runs its products through oneDNN (:func:`cpu_linear`, :func:`linear`,
    and the oneDNN forms of the blocked kernels). The video tracker enters it per step unless
    built with ``exact=True``; the image predictor never does (the reference's GEMMs, bit for bit)."""
    token = _FAST_GEMM.set(enabled)
    try:
        yield
    finally:
        _FAST_GEMM.reset(token)


def linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)``; inside :func:`fast_cpu_gemm`, CPU inference goes through :func:`cpu_linear`."""
    if fast_gemm_enabled(x):
        return cpu_linear(x, layer.weight, layer.bias)
    return token_linear(layer, x)


def key_blocks(num_keys: int, num_rope: int, grid_len: int, k_block: int = K_BLOCK) -> list[tuple[int, int, int | None]]:
    """Key ranges ``(start, stop, rope_offset)`` covering ``num_keys`` keys.

    The first ``num_rope`` keys are whole frames of ``grid_len`` tokens (rotated; ``rope_offset``
    is where the range starts inside its frame, or -1 when it spans whole frames); the rest
    (object pointers) are not rotated (``None``). Ranges never straddle a frame boundary.
    """
    if num_rope % grid_len:
        raise ValueError(f"{num_rope} rotated keys are not whole frames of {grid_len} tokens")
    blocks: list[tuple[int, int, int | None]] = []
    if grid_len <= k_block:  # several whole frames per block
        step = grid_len * (k_block // grid_len)
        blocks += [(j, min(j + step, num_rope), -1) for j in range(0, num_rope, step)]
    else:  # each frame split into equal parts
        parts = -(-grid_len // k_block)
        step = -(-grid_len // parts)
        for frame in range(0, num_rope, grid_len):
            blocks += [(frame + o, frame + min(o + step, grid_len), o) for o in range(0, grid_len, step)]
    blocks += [(j, min(j + k_block, num_keys), None) for j in range(num_rope, num_keys, k_block)]
    return blocks


def _rotated_keys(
    k_in: torch.Tensor,  # (n, Ckv)
    weight: torch.Tensor,  # (h*d, Ckv)
    bias: torch.Tensor | None,
    heads: int,
    table: torch.Tensor,  # (L, d/2, 2)
    rope_offset: int | None,
) -> torch.Tensor:  # (h, n, d)
    k = cpu_linear(k_in, weight, bias).unflatten(-1, (heads, -1)).transpose(0, 1)
    if rope_offset is None:
        return k
    if rope_offset >= 0:  # part of one frame
        table = table[rope_offset : rope_offset + k.shape[1]]
    return apply_rope(k, table)


def folded_memory_attention(
    q: torch.Tensor,  # (Bq, h, Nq, d) rotated queries, Bq = 1 (shared) or B
    k_in: torch.Tensor,  # (B, M, Ckv) key inputs: memory + its position encoding
    v_in: torch.Tensor,  # (B, M, Ckv) value inputs: memory
    k_weight: torch.Tensor,  # (h*d, Ckv) key projection
    k_bias: torch.Tensor | None,  # (h*d,)
    table: torch.Tensor,  # (L, d/2, 2) RoPE table of one frame's grid
    num_rope: int,  # leading keys to rotate: whole frames of L tokens
    scale: float | None = None,
    q_block: int = Q_BLOCK,
    k_block: int = K_BLOCK,
) -> torch.Tensor:  # (B, h, Nq, Ckv) = softmax(q k^T * scale) v_in, k = rope(k_in Wk^T + bk)
    """Attention of rotated queries to projected-on-the-fly keys, weighting the raw values.

    Computed in float32, returned in ``q``'s dtype; works in place, so call it without
    autograd. Fold the value and output projections into one ``(C, h*Ckv)`` matrix to finish
    the layer (see the module docstring).
    """
    dtype = q.dtype
    q, k_in, v_in = q.float(), k_in.float(), v_in.float()
    k_weight = k_weight.float()
    k_bias = k_bias.float() if k_bias is not None else None
    batch, num_keys, ckv = k_in.shape
    heads, num_q, head_dim = q.shape[1:]
    if q.shape[0] not in (1, batch):
        raise ValueError(f"queries have batch {q.shape[0]}, memory has batch {batch}")
    scale = head_dim**-0.5 if scale is None else scale
    blocks = key_blocks(num_keys, num_rope, table.shape[0], k_block)
    widest = max(stop - start for start, stop, _ in blocks)
    as_linear = heads == 1 and fast_gemm_enabled(q)  # the products as oneDNN linear layers
    scores_buf = None if as_linear else q.new_empty(heads * min(q_block, num_q) * widest)  # (h, nq, n) tiles
    out = q.new_empty(batch, heads, num_q, ckv)
    for b in range(batch):
        qb = q[b if q.shape[0] > 1 else 0] * scale  # (h, Nq, d)
        run_max = q.new_full((heads, num_q, 1), float("-inf"))
        run_sum = q.new_zeros(heads, num_q, 1)
        acc = q.new_zeros(heads, num_q, ckv)
        for start, stop, rope_offset in blocks:
            n = stop - start
            keys = _rotated_keys(k_in[b, start:stop], k_weight, k_bias, heads, table, rope_offset)  # (h, n, d)
            values = v_in[b, start:stop].expand(heads, n, ckv)  # (h, n, Ckv), shared by heads
            values_t = values[0].t().contiguous() if as_linear else None  # (Ckv, n)
            for i in range(0, num_q, q_block):
                rows = slice(i, min(i + q_block, num_q))
                if as_linear:
                    s = cpu_linear(qb[0, rows], keys[0]).unsqueeze(0)  # (1, nq, n)
                else:
                    s = scores_buf[: heads * (rows.stop - i) * n].view(heads, rows.stop - i, n)
                    torch.bmm(qb[:, rows], keys.transpose(1, 2), out=s)  # (h, nq, n)
                new_max = torch.maximum(run_max[:, rows], s.amax(-1, keepdim=True))
                s.sub_(new_max).exp_()
                rescale = (run_max[:, rows] - new_max).exp_()  # 0 on the first block
                run_sum[:, rows].mul_(rescale).add_(s.sum(-1, keepdim=True))
                if as_linear:
                    acc[:, rows].mul_(rescale).add_(cpu_linear(s[0], values_t))
                else:
                    acc[:, rows].mul_(rescale).baddbmm_(s, values)
                run_max[:, rows] = new_max
        torch.div(acc, run_sum, out=out[b])
    return out.to(dtype)


def blocked_mlp(x: torch.Tensor, linear1: nn.Linear, linear2: nn.Linear, rows: int = MLP_ROWS) -> torch.Tensor:
    """``linear2(relu(linear1(x)))`` over chunks of rows, the hidden tile staying in cache."""
    flat = x.reshape(-1, x.shape[-1])  # (N, C)
    out = flat.new_empty(flat.shape[0], linear2.out_features)
    onednn = fast_gemm_enabled(flat)
    for i in range(0, flat.shape[0], rows):
        if onednn:
            hidden = cpu_linear(flat[i : i + rows], linear1.weight, linear1.bias, relu=True)  # (rows, F)
            out[i : i + rows] = cpu_linear(hidden, linear2.weight, linear2.bias)
            continue
        hidden = linear1(flat[i : i + rows]).relu_()  # (rows, F)
        if linear2.bias is None:
            torch.mm(hidden, linear2.weight.t(), out=out[i : i + rows])
        else:
            torch.addmm(linear2.bias, hidden, linear2.weight.t(), out=out[i : i + rows])
    return out.view(*x.shape[:-1], linear2.out_features)
