"""rope, naive: one launch for q, a second for k, each program a tile of whole rows of head_dim elements
numbered across batch, heads and positions. The backward is the same kernel run as the transposed rotation on
the output gradients, again once for q and once for k."""

import triton
import triton.language as tl

from kernels import memory
from kernels.dtypes import FLOATS
from kernels.registry import register
from variants.rope._rotate import rotate_halves

# About 2048 elements a program: a tile of whole rows.
TILE_ELEMENTS = 2048


@triton.jit
def _rope_rows_kernel(
    x_ptr, out_ptr, cos_ptr, sin_ptr, rows, heads, seq, half,
    stride_xb, stride_xh, stride_xs, stride_xd, stride_cos_s, stride_cos_d, stride_sin_s, stride_sin_d,
    TRANSPOSE: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_HALF: tl.constexpr,
):  # fmt: skip
    # Rows are numbered in out's contiguous [batch, heads, seq] order; x is read through its own strides.
    row = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    pos = row % seq
    batch_head = row // seq
    batch, head = batch_head // heads, batch_head % heads
    d = tl.arange(0, BLOCK_HALF)
    mask = (row < rows)[:, None] & (d < half)[None, :]
    x_rows = x_ptr + (batch * stride_xb + head * stride_xh + pos * stride_xs)[:, None]
    out1, out2 = rotate_halves(
        x_rows, pos, d, half, mask, cos_ptr, sin_ptr,
        stride_xd, stride_cos_s, stride_cos_d, stride_sin_s, stride_sin_d, TRANSPOSE,
    )  # fmt: skip
    out_rows = out_ptr + row[:, None] * (2 * half)
    tl.store(out_rows + d[None, :], out1.to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(out_rows + half + d[None, :], out2.to(out_ptr.dtype.element_ty), mask=mask)


def _rotate(x, out, cos, sin, transpose):
    batch, heads, seq, dim = x.shape
    rows = batch * heads * seq
    block_half = triton.next_power_of_2(dim // 2)
    block_rows = min(triton.next_power_of_2(rows), max(1, TILE_ELEMENTS // (2 * block_half)))
    _rope_rows_kernel[(triton.cdiv(rows, block_rows),)](
        x, out, cos, sin, rows, heads, seq, dim // 2, *x.stride(), *cos.stride(), *sin.stride(),
        TRANSPOSE=transpose, BLOCK_ROWS=block_rows, BLOCK_HALF=block_half,
    )  # fmt: skip
    return out


def _backward(inputs, out, grad_out):
    q, k, cos, sin = inputs["q"], inputs["k"], inputs["cos"], inputs["sin"]
    dq_rot, dk_rot = grad_out
    dq = _rotate(dq_rot, memory.empty_like(q), cos, sin, transpose=True)
    dk = _rotate(dk_rot, memory.empty_like(k), cos, sin, transpose=True)
    return {"q": dq, "k": dk}


@register(op="rope", name="naive", version="1.0.1", dtypes=FLOATS, backward=_backward)
def rope_naive(q, k, cos, sin, *, out):
    """Tiles of whole rows; q and k rotated by two separate launches."""
    q_out, k_out = out
    _rotate(q, q_out, cos, sin, transpose=False)
    _rotate(k, k_out, cos, sin, transpose=False)
    return out
