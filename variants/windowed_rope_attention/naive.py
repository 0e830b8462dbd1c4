"""windowed_rope_attention, naive: the attention as a framework without a fused kernel would run it, one launch per
step, every [S, S] matrix in fp32 memory. A scores kernel forms both QK^T products in full for every causal tile
(it skips nothing), mixes them by distance and writes the mixed scores; a row softmax turns them into P in place;
a batched GEMM forms P @ V.

The backward rebuilds P the same way, then dP = dO @ V^T, a row kernel turns dP into dS = P * (dP - rowsum(P dP))
split by the mixing weight into the gradients of the two score matrices, and five batched GEMMs give dq1, dk1,
dq2, dk2 and dv. As FA2 does, P and dS are rounded to the operands' dtype for the tensor-core GEMMs."""

import torch
import triton
import triton.language as tl

from kernels import memory
from kernels.dtypes import FLOATS
from kernels.registry import register
from variants.windowed_rope_attention._common import mix_scores, scalars

# Tiles of the scores kernel and of the batched GEMM.
BLOCK_M, BLOCK_N, BLOCK_K = 64, 64, 32
# Columns a row kernel handles per step.
BLOCK_COLS = 1024


@triton.jit
def _scores_kernel(
    q1_ptr, k1_ptr, q2_ptr, k2_ptr, s_ptr, H, S, D, scale, window, near_from, inv_transition,
    sq1b, sq1h, sq1s, sq1d, sk1b, sk1h, sk1s, sk1d, sq2b, sq2h, sq2s, sq2d, sk2b, sk2h, sk2s, sk2d,
    BLEND: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    bh = tl.program_id(2)
    b, h = bh // H, bh % H
    q1_ptr += b * sq1b + h * sq1h
    k1_ptr += b * sk1b + h * sk1h
    q2_ptr += b * sq2b + h * sq2h
    k2_ptr += b * sk2b + h * sk2h
    s1 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    s2 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_K):
        ds = d0 + tl.arange(0, BLOCK_K)
        q_mask = (rows[:, None] < S) & (ds[None, :] < D)
        k_mask = (ds[:, None] < D) & (cols[None, :] < S)
        q1 = tl.load(q1_ptr + rows[:, None] * sq1s + ds[None, :] * sq1d, mask=q_mask, other=0.0)
        k1 = tl.load(k1_ptr + cols[None, :] * sk1s + ds[:, None] * sk1d, mask=k_mask, other=0.0)
        s1 = tl.dot(q1, k1, s1)
        q2 = tl.load(q2_ptr + rows[:, None] * sq2s + ds[None, :] * sq2d, mask=q_mask, other=0.0)
        k2 = tl.load(k2_ptr + cols[None, :] * sk2s + ds[:, None] * sk2d, mask=k_mask, other=0.0)
        s2 = tl.dot(q2, k2, s2)
    dist = rows[:, None] - cols[None, :]
    s, _ = mix_scores(s1 * scale, s2 * scale, dist, window, near_from, inv_transition, BLEND)
    s = tl.where(dist >= 0, s, float("-inf"))
    out = s_ptr + bh.to(tl.int64) * S * S + rows[:, None] * S + cols[None, :]
    tl.store(out, s, mask=(rows[:, None] < S) & (cols[None, :] < S))


@triton.jit
def _softmax_rows_kernel(s_ptr, S, BLOCK_COLS: tl.constexpr):
    # In place over one row of the scores: a pass for the running max and sum, a pass to write P.
    row_ptr = s_ptr + tl.program_id(0).to(tl.int64) * S
    m = tl.full((BLOCK_COLS,), float("-inf"), dtype=tl.float32)
    total = tl.zeros((BLOCK_COLS,), dtype=tl.float32)
    for c0 in range(0, S, BLOCK_COLS):
        cols = c0 + tl.arange(0, BLOCK_COLS)
        x = tl.load(row_ptr + cols, mask=cols < S, other=float("-inf"))
        m_new = tl.maximum(m, x)
        # Lanes that have seen only -inf keep a sum of 0 (and would give NaN from -inf - -inf).
        safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        total = total * tl.exp(m - safe) + tl.exp(x - safe)
        m = m_new
    row_max = tl.max(m, 0)
    row_sum = tl.sum(total * tl.exp(m - row_max), 0)
    for c0 in range(0, S, BLOCK_COLS):
        cols = c0 + tl.arange(0, BLOCK_COLS)
        x = tl.load(row_ptr + cols, mask=cols < S, other=float("-inf"))
        tl.store(row_ptr + cols, tl.exp(x - row_max) / row_sum, mask=cols < S)


@triton.jit
def _softmax_grad_split_kernel(
    p_ptr, dp_ptr, ds2_ptr, S, scale, window, near_from, inv_transition,
    BLEND: tl.constexpr, BLOCK_COLS: tl.constexpr,
):  # fmt: skip
    # dS = P * (dP - rowsum(P * dP)), then d(raw q.k) of each encoding: scale * (1 - alpha) * dS into dP's place
    # and scale * alpha * dS into ds2.
    row = tl.program_id(0)
    i = row % S
    offset = row.to(tl.int64) * S
    delta = tl.zeros((BLOCK_COLS,), dtype=tl.float32)
    for c0 in range(0, S, BLOCK_COLS):
        cols = c0 + tl.arange(0, BLOCK_COLS)
        p = tl.load(p_ptr + offset + cols, mask=cols < S, other=0.0)
        dp = tl.load(dp_ptr + offset + cols, mask=cols < S, other=0.0)
        delta += p * dp
    row_delta = tl.sum(delta, 0)
    for c0 in range(0, S, BLOCK_COLS):
        cols = c0 + tl.arange(0, BLOCK_COLS)
        p = tl.load(p_ptr + offset + cols, mask=cols < S, other=0.0)
        dp = tl.load(dp_ptr + offset + cols, mask=cols < S, other=0.0)
        ds = p * (dp - row_delta) * scale
        _, alpha = mix_scores(ds, ds, i - cols, window, near_from, inv_transition, BLEND)
        tl.store(dp_ptr + offset + cols, ds * (1.0 - alpha), mask=cols < S)
        tl.store(ds2_ptr + offset + cols, ds * alpha, mask=cols < S)


@triton.jit
def _bmm_kernel(
    a_ptr, b_ptr, c_ptr, H, M, N, K,
    sab, sah, sam, sak, sbb, sbh, sbk, sbn, scb, sch, scm, scn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    bh = tl.program_id(2)
    b, h = (bh // H).to(tl.int64), (bh % H).to(tl.int64)
    a_ptr += b * sab + h * sah
    b_ptr += b * sbb + h * sbh
    c_ptr += b * scb + h * sch
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(a_ptr + rows[:, None] * sam + ks[None, :] * sak, mask=(rows[:, None] < M) & (ks[None, :] < K))
        bt = tl.load(b_ptr + ks[:, None] * sbk + cols[None, :] * sbn, mask=(ks[:, None] < K) & (cols[None, :] < N))
        # An fp32 P or dS meets a 16-bit operand: rounded to that dtype for the tensor cores, as FA2 rounds them.
        acc = tl.dot(a.to(bt.dtype), bt, acc)
    tl.store(
        c_ptr + rows[:, None] * scm + cols[None, :] * scn,
        acc.to(c_ptr.dtype.element_ty),
        mask=(rows[:, None] < M) & (cols[None, :] < N),
    )


def _bmm(a, b, out):
    """``out[b, h] = a[b, h] @ b[b, h]`` for 4-D operands of any strides, accumulated in fp32."""
    B, H, M, K = a.shape
    N = b.shape[-1]
    grid = (triton.cdiv(M, BLOCK_M), triton.cdiv(N, BLOCK_N), B * H)
    _bmm_kernel[grid](
        a, b, out, H, M, N, K, *a.stride(), *b.stride(), *out.stride(),
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, num_warps=4,
    )  # fmt: skip
    return out


def _probabilities(q1, k1, q2, k2, window, transition, scale):
    """P [B, H, S, S] in fp32: the mixed, masked scores, then their row softmax in place."""
    B, H, S, D = q1.shape
    scale, near_from, inv_transition, blend = scalars(q1, window, transition, scale)
    p = memory.empty((B, H, S, S), dtype=torch.float32, device=q1.device)
    grid = (triton.cdiv(S, BLOCK_M), triton.cdiv(S, BLOCK_N), B * H)
    _scores_kernel[grid](
        q1, k1, q2, k2, p, H, S, D, scale, window, near_from, inv_transition,
        *q1.stride(), *k1.stride(), *q2.stride(), *k2.stride(),
        BLEND=blend, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, num_warps=4,
    )  # fmt: skip
    _softmax_rows_kernel[(B * H * S,)](p, S, BLOCK_COLS=min(BLOCK_COLS, triton.next_power_of_2(S)), num_warps=4)
    return p


def _backward(inputs, out, grad_out):
    q1, k1, q2, k2, v = (inputs[n] for n in ("q1", "k1", "q2", "k2", "v"))
    window, transition = inputs["window"], inputs.get("transition", 0)
    B, H, S, _ = q1.shape
    p = _probabilities(q1, k1, q2, k2, window, transition, inputs.get("scale"))
    dv = _bmm(p.transpose(-1, -2), grad_out, memory.empty_like(v))
    ds1 = _bmm(grad_out, v.transpose(-1, -2), memory.empty((B, H, S, S), dtype=torch.float32, device=q1.device))
    ds2 = memory.empty((B, H, S, S), dtype=torch.float32, device=q1.device)
    scale, near_from, inv_transition, blend = scalars(q1, window, transition, inputs.get("scale"))
    _softmax_grad_split_kernel[(B * H * S,)](
        p, ds1, ds2, S, scale, window, near_from, inv_transition,
        BLEND=blend, BLOCK_COLS=min(BLOCK_COLS, triton.next_power_of_2(S)), num_warps=4,
    )  # fmt: skip
    return {
        "q1": _bmm(ds1, k1, memory.empty_like(q1)),
        "k1": _bmm(ds1.transpose(-1, -2), q1, memory.empty_like(k1)),
        "q2": _bmm(ds2, k2, memory.empty_like(q2)),
        "k2": _bmm(ds2.transpose(-1, -2), q2, memory.empty_like(k2)),
        "v": dv,
    }


@register(
    op="windowed_rope_attention",
    name="naive",
    version="1.0.0",
    dtypes=FLOATS,
    modes=("default", "blend"),
    backward=_backward,
)
def windowed_rope_attention_naive(q1, k1, q2, k2, v, window, transition=0, scale=None, *, out):
    """Unfused: a scores kernel computing both QK^T in full, a row softmax and a P @ V GEMM, through fp32 [S, S]."""
    p = _probabilities(q1, k1, q2, k2, window, transition, scale)
    return _bmm(p, v, out)
