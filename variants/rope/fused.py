"""rope, fused: ONE launch rotates q and k together. The grid is partitioned: the first programs take tiles of
q, the rest tiles of k, each tile BLOCK_SEQ positions of one (batch, head) with both halves of head_dim. The
backward is the same launch run as the transposed rotation on both output gradients."""

import triton
import triton.language as tl

from kernels import memory
from kernels.dtypes import FLOATS
from kernels.registry import register
from variants.rope._rotate import rotate_halves

# About 4096 elements a tile (both halves), 16 per thread per half over 4 warps: whole 16-byte vectors for every
# dtype along head_dim. Consecutive tiles walk the positions of one head, so cos and sin rows are re-read
# from L2 by every head rather than from memory.
TILE_ELEMENTS = 4096
NUM_WARPS = 4


@triton.jit
def _rotate_tile(
    x_ptr, out_ptr, cos_ptr, sin_ptr, tile, heads, seq, half,
    stride_xb, stride_xh, stride_xs, stride_xd, stride_cos_s, stride_cos_d, stride_sin_s, stride_sin_d,
    TRANSPOSE: tl.constexpr, BLOCK_SEQ: tl.constexpr, BLOCK_HALF: tl.constexpr,
):  # fmt: skip
    seq_tiles = tl.cdiv(seq, BLOCK_SEQ)
    batch_head = tile // seq_tiles
    batch, head = batch_head // heads, batch_head % heads
    pos = (tile % seq_tiles) * BLOCK_SEQ + tl.arange(0, BLOCK_SEQ)
    d = tl.arange(0, BLOCK_HALF)
    mask = (pos < seq)[:, None] & (d < half)[None, :]

    x_rows = x_ptr + batch * stride_xb + head * stride_xh + pos[:, None] * stride_xs
    out1, out2 = rotate_halves(
        x_rows, pos, d, half, mask, cos_ptr, sin_ptr,
        stride_xd, stride_cos_s, stride_cos_d, stride_sin_s, stride_sin_d, TRANSPOSE,
    )  # fmt: skip

    # out is contiguous [batch, heads, seq, 2 * half].
    out_rows = out_ptr + (batch_head * seq + pos[:, None]) * (2 * half)
    tl.store(out_rows + d[None, :], out1.to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(out_rows + half + d[None, :], out2.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _rope_fused_kernel(
    q_ptr, k_ptr, q_out_ptr, k_out_ptr, cos_ptr, sin_ptr, q_tiles, q_heads, k_heads, seq, half,
    stride_qb, stride_qh, stride_qs, stride_qd, stride_kb, stride_kh, stride_ks, stride_kd,
    stride_cos_s, stride_cos_d, stride_sin_s, stride_sin_d,
    TRANSPOSE: tl.constexpr, BLOCK_SEQ: tl.constexpr, BLOCK_HALF: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    if pid < q_tiles:
        _rotate_tile(
            q_ptr, q_out_ptr, cos_ptr, sin_ptr, pid, q_heads, seq, half,
            stride_qb, stride_qh, stride_qs, stride_qd, stride_cos_s, stride_cos_d, stride_sin_s, stride_sin_d,
            TRANSPOSE, BLOCK_SEQ, BLOCK_HALF,
        )  # fmt: skip
    else:
        _rotate_tile(
            k_ptr, k_out_ptr, cos_ptr, sin_ptr, pid - q_tiles, k_heads, seq, half,
            stride_kb, stride_kh, stride_ks, stride_kd, stride_cos_s, stride_cos_d, stride_sin_s, stride_sin_d,
            TRANSPOSE, BLOCK_SEQ, BLOCK_HALF,
        )  # fmt: skip


def _launch(q, k, q_out, k_out, cos, sin, transpose):
    batch, q_heads, seq, dim = q.shape
    k_heads = k.shape[1]
    block_half = triton.next_power_of_2(dim // 2)
    block_seq = min(triton.next_power_of_2(seq), max(1, TILE_ELEMENTS // (2 * block_half)))
    seq_tiles = triton.cdiv(seq, block_seq)
    q_tiles = batch * q_heads * seq_tiles
    grid = (q_tiles + batch * k_heads * seq_tiles,)
    _rope_fused_kernel[grid](
        q, k, q_out, k_out, cos, sin, q_tiles, q_heads, k_heads, seq, dim // 2,
        *q.stride(), *k.stride(), *cos.stride(), *sin.stride(),
        TRANSPOSE=transpose, BLOCK_SEQ=block_seq, BLOCK_HALF=block_half, num_warps=NUM_WARPS,
    )  # fmt: skip


def _backward(inputs, out, grad_out):
    q, k = inputs["q"], inputs["k"]
    dq_rot, dk_rot = grad_out
    dq, dk = memory.empty_like(q), memory.empty_like(k)
    _launch(dq_rot, dk_rot, dq, dk, inputs["cos"], inputs["sin"], transpose=True)
    return {"q": dq, "k": dk}


@register(op="rope", name="fused", version="1.0.1", dtypes=FLOATS, backward=_backward)
def rope_fused(q, k, cos, sin, *, out):
    """One launch for q and k together, programs partitioned over q tiles then k tiles."""
    q_out, k_out = out
    _launch(q, k, q_out, k_out, cos, sin, transpose=False)
    return out
