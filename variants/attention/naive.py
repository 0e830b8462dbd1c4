"""attention, naive: the textbook three steps, each its own kernel, with the score matrix in memory:
``S = scale * Q K^T`` (fp32, [B, Hq, Sq, Sk]), ``P = softmax(S)`` row by row (the causal mask applied here), then
``O = P V``. P is kept in the operands' dtype, as eager attention in that dtype keeps it, and is what the
backward reuses:

    dV = P^T dO,  dP = dO V^T,  dS = P * (dP - rowsum(P * dP)),  dQ = scale * dS K,  dK = scale * dS^T Q

Memory grows with Sq x Sk; the flash variant is the one that does not. With grouped-query attention the
gradients of a key/value head sum over the query heads that share it, inside one GEMM program (no atomics).
"""

import torch
import triton
import triton.language as tl

from kernels import backend, memory
from kernels.dtypes import FLOATS
from kernels.registry import register


def _gemm_blocks():
    return (32, 32, 16) if backend.interpreting() else (64, 64, 32)


@triton.jit
def _head_gemm_kernel(
    a_ptr, b_ptr, c_ptr, M, N, K, num_heads, alpha,
    stride_ab, stride_ah, stride_am, stride_ak, stride_bb, stride_bh, stride_bk, stride_bn,
    stride_cb, stride_ch, stride_cm, stride_cn,
    SUM_GROUP: tl.constexpr, B_GROUP: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    # c[b, h] = alpha * sum over g < SUM_GROUP of a[b, h * SUM_GROUP + g] @ b[b, (h * SUM_GROUP + g) // B_GROUP]:
    # B_GROUP > 1 reads a shared key/value head; SUM_GROUP > 1 sums the query heads that share one.
    bh = tl.program_id(2)
    batch, head = bh // num_heads, bh % num_heads
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for g in range(0, SUM_GROUP):
        a_head = head * SUM_GROUP + g
        b_head = a_head // B_GROUP
        a_base = a_ptr + batch.to(tl.int64) * stride_ab + a_head.to(tl.int64) * stride_ah
        b_base = b_ptr + batch.to(tl.int64) * stride_bb + b_head.to(tl.int64) * stride_bh
        for k0 in range(0, K, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            a = tl.load(a_base + rows[:, None] * stride_am + ks[None, :] * stride_ak,
                        mask=(rows[:, None] < M) & (ks[None, :] < K), other=0.0)  # fmt: skip
            b = tl.load(b_base + ks[:, None] * stride_bk + cols[None, :] * stride_bn,
                        mask=(ks[:, None] < K) & (cols[None, :] < N), other=0.0)  # fmt: skip
            acc = tl.dot(a, b, acc)
    acc = acc * alpha
    c_base = c_ptr + batch.to(tl.int64) * stride_cb + head.to(tl.int64) * stride_ch
    tl.store(c_base + rows[:, None] * stride_cm + cols[None, :] * stride_cn, acc.to(c_ptr.dtype.element_ty),
             mask=(rows[:, None] < M) & (cols[None, :] < N))  # fmt: skip


def _head_gemm(a, b, c, *, alpha=1.0, sum_group=1, b_group=1):
    """``c[:, h] = alpha * sum_g a[:, h * sum_group + g] @ b[:, (h * sum_group + g) // b_group]`` for 4-D
    tensors of any strides (a transposed view is a swap of the last two strides)."""
    B, H, M, N = c.shape
    K = a.shape[3]
    block_m, block_n, block_k = _gemm_blocks()
    grid = (triton.cdiv(M, block_m), triton.cdiv(N, block_n), B * H)
    _head_gemm_kernel[grid](
        a, b, c, M, N, K, H, float(alpha), *a.stride(), *b.stride(), *c.stride(),
        SUM_GROUP=sum_group, B_GROUP=b_group, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=4,
    )  # fmt: skip
    return c


@triton.jit
def _softmax_rows_kernel(s_ptr, p_ptr, seq_q, seq_k, CAUSAL: tl.constexpr, BLOCK: tl.constexpr):
    # One program per row of the contiguous [B * Hq * Sq, Sk] scores; its query index is row % Sq.
    row = tl.program_id(0)
    query = row % seq_q
    s_row = s_ptr + row.to(tl.int64) * seq_k
    p_row = p_ptr + row.to(tl.int64) * seq_k
    # Keys past `visible` are masked (top-left causal: key j is visible to query i when j <= i).
    visible = tl.minimum(query + 1, seq_k) if CAUSAL else seq_k
    m = tl.full((BLOCK,), float("-inf"), dtype=tl.float32)
    total = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, visible, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        s = tl.load(s_row + cols, mask=cols < visible, other=float("-inf"))
        m_new = tl.maximum(m, s)
        # A lane that has seen only masked keys keeps m = -inf and a sum of 0; shifting it by 0 instead of -inf
        # keeps exp(-inf - -inf) = NaN out of it.
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        total = total * tl.exp(m - shift) + tl.exp(s - shift)
        m = m_new
    # Every row sees key 0, so row_max is finite and lanes still at -inf add exp(-inf) = 0.
    row_max = tl.max(m, 0)
    row_sum = tl.sum(total * tl.exp(m - row_max), 0)
    for start in range(0, seq_k, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        s = tl.load(s_row + cols, mask=cols < visible, other=float("-inf"))
        p = tl.exp(s - row_max) / row_sum
        tl.store(p_row + cols, p.to(p_ptr.dtype.element_ty), mask=cols < seq_k)


@triton.jit
def _softmax_grad_rows_kernel(p_ptr, dp_ptr, ds_ptr, seq_k, BLOCK: tl.constexpr):
    # dS = P * (dP - rowsum(P * dP)); masked keys have P = 0 and so dS = 0.
    row = tl.program_id(0).to(tl.int64)
    dot = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, seq_k, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        p = tl.load(p_ptr + row * seq_k + cols, mask=cols < seq_k, other=0.0).to(tl.float32)
        dp = tl.load(dp_ptr + row * seq_k + cols, mask=cols < seq_k, other=0.0)
        dot += p * dp
    delta = tl.sum(dot, 0)
    for start in range(0, seq_k, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        p = tl.load(p_ptr + row * seq_k + cols, mask=cols < seq_k, other=0.0).to(tl.float32)
        dp = tl.load(dp_ptr + row * seq_k + cols, mask=cols < seq_k, other=0.0)
        tl.store(ds_ptr + row * seq_k + cols, (p * (dp - delta)).to(ds_ptr.dtype.element_ty), mask=cols < seq_k)


def _row_block(seq_k: int) -> int:
    return 16 if backend.interpreting() else min(triton.next_power_of_2(seq_k), 1024)


def _scale(q, scale):
    return q.shape[3] ** -0.5 if scale is None else float(scale)


def _backward(inputs, out, grad_out):
    q, k, v, p = inputs["q"], inputs["k"], inputs["v"], inputs["stash"]["p"]
    do = grad_out
    B, Hq, Sq, Sk = p.shape
    group = Hq // k.shape[1]
    sm_scale = _scale(q, inputs["scale"])
    dq, dk, dv = (memory.empty(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))
    _head_gemm(p.transpose(2, 3), do, dv, sum_group=group)
    dp = _head_gemm(do, v.transpose(2, 3), memory.empty(p.shape, dtype=torch.float32, device=p.device), b_group=group)
    ds = memory.empty(p.shape, dtype=p.dtype, device=p.device)
    _softmax_grad_rows_kernel[(B * Hq * Sq,)](p, dp, ds, Sk, BLOCK=_row_block(Sk))
    _head_gemm(ds, k, dq, alpha=sm_scale, b_group=group)
    _head_gemm(ds.transpose(2, 3), q, dk, alpha=sm_scale, sum_group=group)
    return {"q": dq, "k": dk, "v": dv}


@register(op="attention", name="naive", version="1.0.0", dtypes=FLOATS, backward=_backward)
def attention_naive(q, k, v, causal, scale, *, out, stash):
    """Three separate kernels through memory: S = scale * QK^T in fp32, a row softmax into P, then P @ V."""
    B, Hq, Sq, _ = q.shape
    Sk = k.shape[2]
    group = Hq // k.shape[1]
    s = _head_gemm(
        q, k.transpose(2, 3), memory.empty((B, Hq, Sq, Sk), dtype=torch.float32, device=q.device),
        alpha=_scale(q, scale), b_group=group,
    )  # fmt: skip
    p = memory.empty(s.shape, dtype=q.dtype, device=q.device)
    _softmax_rows_kernel[(B * Hq * Sq,)](s, p, Sq, Sk, CAUSAL=bool(causal), BLOCK=_row_block(Sk))
    del s
    _head_gemm(p, v, out, b_group=group)
    if stash is not None:
        stash["p"] = p
    return out
