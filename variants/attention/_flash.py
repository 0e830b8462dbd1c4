"""The fused FlashAttention-2 forward the flash, flash_autotuned and fp8 variants share.

One program owns BLOCK_M query rows of one (batch, query head). It streams the key/value head those rows read in
BLOCK_N-row tiles and keeps a running maximum ``m``, a running sum ``l`` and an fp32 accumulator, rescaled as the
maximum grows (the online softmax), so the [Sq, Sk] score matrix never reaches memory. Scores are kept in base 2
(scaled by log2(e)) so each exponential is one ``exp2``; the stored logsumexp is in that base too.

The key loop is split in two: tiles that need no mask (fully inside Sk and, for a causal mask, fully left of the
diagonal) run without any ``tl.where``, and only the few tiles on the diagonal or at the ragged end of Sk pay
for the mask. The causal mask is aligned top-left (key j is visible to query i when j <= i).

An underscore module: it registers nothing.
"""

import torch
import triton
import triton.language as tl

from kernels import backend


@triton.jit
def _round_to_e4m3_grid(x):
    """Non-negative fp32 ``x`` rounded to nearest-even with e4m3's 3 mantissa bits, carrying into the exponent; the
    cast of the result to e4m3 is then exact. Used only under the interpreter, whose own fp32 -> fp8 downcast
    drops that carry (126.24 gives 64, not 128: https://github.com/triton-lang/triton/issues/8322, fixed by
    https://github.com/triton-lang/triton/pull/11897); GPUs round in the cvt instruction."""
    bits = x.to(tl.int32, bitcast=True)
    bits = (bits + 0x7FFFF + ((bits >> 20) & 1)) & -0x100000
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _attend_tiles(
    acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
    rows, lo, hi, seq_k, qk_scale,
    MASKED: tl.constexpr, CAUSAL: tl.constexpr, FP8: tl.constexpr, ROUND_FP8_P: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    dims = tl.arange(0, HEAD_DIM)
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        cols = start_n + tl.arange(0, BLOCK_N)
        # k is read as its transpose [HEAD_DIM, BLOCK_N] so that q @ k_t is a plain dot.
        k_ptrs = k_base + cols[None, :] * stride_kn + dims[:, None] * stride_kd
        v_ptrs = v_base + cols[:, None] * stride_vn + dims[None, :] * stride_vd
        k_t = tl.load(k_ptrs, mask=cols[None, :] < seq_k, other=0.0) if MASKED else tl.load(k_ptrs)
        s = tl.dot(q, k_t) * qk_scale
        if MASKED:
            visible = cols[None, :] < seq_k
            if CAUSAL:
                visible = visible & (cols[None, :] <= rows[:, None])
            s = tl.where(visible, s, float("-inf"))
        # Every row sees at least one key in the first tile it visits (key 0 or a key left of the diagonal), so
        # m_i is finite from then on and a fully masked later row segment gives exp2(-inf) = 0, never NaN.
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_ptrs, mask=cols[:, None] < seq_k, other=0.0) if MASKED else tl.load(v_ptrs)
        acc = acc * alpha[:, None]
        # fp8: probabilities in [0, 1] times 256 before the cast to e4m3 (max 448), so the small ones stay above
        # e4m3's subnormal range (2**-6) instead of losing their last bits; the sum is divided back at the end.
        if FP8:
            p_fp8 = _round_to_e4m3_grid(p * 256.0) if ROUND_FP8_P else p * 256.0
            p_cast = p_fp8.to(v.dtype)
        else:
            p_cast = p.to(v.dtype)
        acc = tl.dot(p_cast, v, acc)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def key_ranges(start_m, seq_k, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """``(lo, hi)`` for the query tile starting at ``start_m``: key tiles [0, lo) need no mask, [lo, hi) do. BLOCK_M
    is a multiple of BLOCK_N, so with a causal mask every key left of start_m is visible to every row of the tile
    and the diagonal covers whole key tiles; without one only the ragged end of Sk is masked."""
    full_k = (seq_k // BLOCK_N) * BLOCK_N
    if CAUSAL:
        lo = tl.minimum(start_m, full_k)
        hi = tl.minimum(start_m + BLOCK_M, seq_k)
    else:
        lo = full_k
        hi = seq_k
    return lo, hi


@triton.jit
def flash_forward_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr, scales_ptr, sm_scale, num_heads, group, seq_q, seq_k,
    stride_qb, stride_qh, stride_qm, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd, stride_ob, stride_oh, stride_om, stride_od,
    CAUSAL: tl.constexpr, STORE_LSE: tl.constexpr, FP8: tl.constexpr, ROUND_FP8_P: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    # With a causal mask the last query tiles do the most work: launch them first, so that the short ones fill
    # the tail of the grid instead of leaving SMs idle behind a long one.
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0) if CAUSAL else tl.program_id(0)
    start_m = pid_m * BLOCK_M
    bh = tl.program_id(1)
    batch, head = bh // num_heads, bh % num_heads
    # Grouped-query attention: `group` consecutive query heads read one key/value head.
    kv_head = head // group
    q_base = q_ptr + batch.to(tl.int64) * stride_qb + head.to(tl.int64) * stride_qh
    k_base = k_ptr + batch.to(tl.int64) * stride_kb + kv_head.to(tl.int64) * stride_kh
    v_base = v_ptr + batch.to(tl.int64) * stride_vb + kv_head.to(tl.int64) * stride_vh
    rows = start_m + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, HEAD_DIM)
    q = tl.load(q_base + rows[:, None] * stride_qm + dims[None, :] * stride_qd, mask=rows[:, None] < seq_q, other=0.0)

    qk_scale = sm_scale * 1.4426950408889634
    if FP8:
        # Per-tensor dequantization: q_scale * k_scale factors out of every score, v_scale out of every output.
        qk_scale = qk_scale * tl.load(scales_ptr) * tl.load(scales_ptr + 1)
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, HEAD_DIM), dtype=tl.float32)

    lo, hi = key_ranges(start_m, seq_k, CAUSAL, BLOCK_M, BLOCK_N)
    acc, l_i, m_i = _attend_tiles(
        acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd, rows, 0, lo, seq_k, qk_scale,
        MASKED=False, CAUSAL=CAUSAL, FP8=FP8, ROUND_FP8_P=ROUND_FP8_P, HEAD_DIM=HEAD_DIM, BLOCK_N=BLOCK_N,
    )  # fmt: skip
    acc, l_i, m_i = _attend_tiles(
        acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd, rows, lo, hi, seq_k, qk_scale,
        MASKED=True, CAUSAL=CAUSAL, FP8=FP8, ROUND_FP8_P=ROUND_FP8_P, HEAD_DIM=HEAD_DIM, BLOCK_N=BLOCK_N,
    )  # fmt: skip

    if FP8:
        acc = acc * (tl.load(scales_ptr + 2) / 256.0)
    acc = acc / l_i[:, None]
    row_ok = rows < seq_q
    o_base = o_ptr + batch.to(tl.int64) * stride_ob + head.to(tl.int64) * stride_oh
    o_ptrs = o_base + rows[:, None] * stride_om + dims[None, :] * stride_od
    tl.store(o_ptrs, acc.to(o_ptr.dtype.element_ty), mask=row_ok[:, None])
    if STORE_LSE:
        # Base-2 logsumexp of the scaled scores: the backward rebuilds P = exp2(s * qk_scale - lse) from it.
        tl.store(lse_ptr + bh.to(tl.int64) * seq_q + rows, m_i + tl.math.log2(l_i), mask=row_ok)


def forward_config(head_dim: int, itemsize: int) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) of the untuned forward: FlashAttention-2's Hopper/Ampere choice
    of 128 query rows per program and 64-key tiles (128 for fp8, whose tiles take half the shared memory), 8 warps
    for 128-wide heads; fp32 tiles are halved to fit shared memory. Under the interpreter, small tiles that still
    take several steps over the odd test lengths (and make BLOCK_M != BLOCK_N)."""
    if backend.interpreting():
        return 32, 16, 4, 1
    if itemsize == 4:
        return 64, 32, 4, 2
    block_n = 128 if itemsize == 1 else 64
    return 128, block_n, 8 if head_dim >= 128 else 4, 3


def launch_forward(q, k, v, out, *, causal, scale, lse=None, fp8_scales=None, kernel=None):
    """Run ``kernel`` (default: flash_forward_kernel with forward_config's tiles) over q, k, v of any
    strides into ``out``; with ``lse`` ([B * Hq, Sq] fp32) it also stores the base-2 logsumexp of each row."""
    B, Hq, Sq, D = q.shape
    Hkv, Sk = k.shape[1], k.shape[2]
    sm_scale = D**-0.5 if scale is None else float(scale)
    args = (
        q, k, v, out, lse, fp8_scales, sm_scale, Hq, Hq // Hkv, Sq, Sk,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(),
    )  # fmt: skip
    fp8 = fp8_scales is not None
    flags = {
        "CAUSAL": bool(causal),
        "STORE_LSE": lse is not None,
        "FP8": fp8,
        "ROUND_FP8_P": fp8 and backend.interpreting(),
        "HEAD_DIM": D,
    }
    if kernel is not None:
        # An autotuned kernel picks BLOCK_M itself: the grid asks for it.
        kernel[lambda meta: (triton.cdiv(Sq, meta["BLOCK_M"]), B * Hq)](*args, **flags)
        return out
    block_m, block_n, num_warps, num_stages = forward_config(D, q.element_size())
    grid = (triton.cdiv(Sq, block_m), B * Hq)
    flash_forward_kernel[grid](
        *args, **flags, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=num_warps, num_stages=num_stages
    )
    return out


def new_lse(q: torch.Tensor) -> torch.Tensor:
    from kernels import memory

    B, Hq, Sq, _ = q.shape
    return memory.empty((B * Hq, Sq), dtype=torch.float32, device=q.device)
