"""windowed_rope_attention, fused: flash attention (FA2) with two score sources. One program per block of queries
streams the key blocks with an online softmax and never writes a score to memory. Key blocks fall into regions by
distance: blocks entirely at or beyond the window compute only q2 @ k2^T, blocks entirely below window - transition
only q1 @ k1^T, and only the blocks straddling the boundary (a band about one block wide, plus the transition)
compute both and mix them. The causal mask is applied only in blocks that cross the diagonal. The forward stores
each row's logsumexp.

The backward is FA2's: rowsum(dO * O) first, then a program per key block that walks the query blocks for dk1, dk2
and dv, and a program per query block that walks the key blocks for dq1 and dq2, each recomputing P from the
logsumexp and skipping the QK^T a region does not need."""

import torch
import triton
import triton.language as tl

from kernels import backend, memory
from kernels.dtypes import FLOATS
from kernels.registry import register
from kernels.tuning import autotune
from variants.windowed_rope_attention._common import head_block, mix_scores, scalars

MAX_HEAD_DIM = 128
LOG2E = 1.4426950408889634


def _config(bm, bn, warps, stages):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps, num_stages=stages)


# FA2's tiles on Hopper, narrowed by what sm_90 register files hold: compiled with Triton for bf16 at head dim 128,
# these need at most 255 registers a thread with no or few bytes spilled (the straddling blocks keep two score
# tiles live, and dk/dv three accumulators). Wider ones (a 128 x 128 forward, a 32 x 128 dk/dv) spilled hundreds of
# bytes. The forward and dq kernels need BLOCK_M % BLOCK_N == 0 (the diagonal starts on a key block), the dk/dv
# kernel BLOCK_N % BLOCK_M == 0. The last of each list is the interpreter's; configs that do not fit (fp32 tiles)
# are dropped by the autotuner.
FWD_CONFIGS = [
    _config(128, 64, 8, 2),
    _config(128, 32, 8, 3),
    _config(64, 64, 8, 3),
    _config(64, 32, 4, 2),
    _config(32, 16, 4, 1),
]
DQ_CONFIGS = [_config(64, 32, 8, 2), _config(128, 32, 8, 2), _config(64, 16, 4, 2), _config(32, 16, 4, 1)]
DKDV_CONFIGS = [
    _config(16, 64, 8, 2),
    _config(16, 128, 8, 2),
    _config(32, 64, 8, 2),
    _config(32, 32, 4, 2),
    _config(16, 32, 4, 1),
]


def _interpreter_keeps_small(configs, named_args, **kwargs):
    # Under the interpreter a config is run, not timed: the smallest puts every region into a few-dozen-token test,
    # and its unequal sides check the region bounds where BLOCK_M != BLOCK_N, as on the GPU.
    return configs[-1:] if backend.interpreting() else configs


# -- scores ----------------------------------------------------------------------------------------------------------
@triton.jit
def _tile_scores(
    a1, a2, b1_ptrs, b2_ptrs, b_mask, dist, window, near_from, inv_transition, qk_scale,
    USE_S1: tl.constexpr, USE_S2: tl.constexpr, MASKED: tl.constexpr, BLEND: tl.constexpr,
):  # fmt: skip
    """The scaled scores of the tile ``a`` (its two encodings a1, a2) against the tile ``b`` that this step reads
    (b1, b2), for the region's encodings: ``(s, alpha, b1, b2)``, alpha the second encoding's weight. Queries
    against keys in the forward and dq passes; keys against queries, transposed, in the dk/dv pass, which is why
    ``dist`` (query minus key position, shaped like s) comes from the caller. A b tile the region does not use is
    not read; zeros stand in for it (and for alpha), unused, so that every region returns the same four values."""
    if USE_S1:
        b1 = tl.load(b1_ptrs, mask=b_mask, other=0.0)
        s1 = tl.dot(a1, tl.trans(b1))
    else:
        b1 = tl.zeros(b_mask.shape, dtype=a1.dtype)
    if USE_S2:
        b2 = tl.load(b2_ptrs, mask=b_mask, other=0.0)
        s2 = tl.dot(a2, tl.trans(b2))
    else:
        b2 = tl.zeros(b_mask.shape, dtype=a2.dtype)
    if USE_S1 and USE_S2:
        s, alpha = mix_scores(s1, s2, dist, window, near_from, inv_transition, BLEND)
    elif USE_S1:
        s, alpha = s1, 0.0
    else:
        s, alpha = s2, 1.0
    s = s * qk_scale
    if MASKED:
        s = tl.where(dist >= 0, s, float("-inf"))
    return s, alpha, b1, b2


# -- forward ---------------------------------------------------------------------------------------------------------
@triton.jit
def _attend_key_blocks(
    acc, l_i, m_i, q1, q2, k1_ptr, k2_ptr, v_ptr, sk1s, sk1d, sk2s, sk2d, svs, svd,
    rows, dcols, lo, hi, S, window, near_from, inv_transition, qk_scale,
    USE_S1: tl.constexpr, USE_S2: tl.constexpr, MASKED: tl.constexpr, BLEND: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    for n0 in range(lo, hi, BLOCK_N):
        keys = n0 + tl.arange(0, BLOCK_N)
        # Unmasked regions lie wholly before the query block, so inside the sequence: no key bound to check.
        kmask = (dcols[None, :] < HEAD_DIM) & (keys[:, None] < S) if MASKED else dcols[None, :] < HEAD_DIM
        s, _, _, _ = _tile_scores(
            q1, q2, k1_ptr + keys[:, None] * sk1s + dcols[None, :] * sk1d,
            k2_ptr + keys[:, None] * sk2s + dcols[None, :] * sk2d, kmask, rows[:, None] - keys[None, :],
            window, near_from, inv_transition, qk_scale, USE_S1, USE_S2, MASKED, BLEND,
        )  # fmt: skip
        # Every row's first key block holds key 0, which no row masks: m_new is finite from the first step on.
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.math.exp2(s - m_new[:, None])
        correction = tl.math.exp2(m_i - m_new)
        l_i = l_i * correction + tl.sum(p, 1)
        v = tl.load(v_ptr + keys[:, None] * svs + dcols[None, :] * svd, mask=kmask, other=0.0)
        acc = tl.dot(p.to(v.dtype), v, acc * correction[:, None])
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _key_regions(m0, window, near_from, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """For queries [m0, m0 + BLOCK_M): keys before ``far_hi`` are all at least ``window`` away, keys from
    ``near_lo`` on all less than ``near_from`` away (both multiples of BLOCK_N, far_hi <= near_lo)."""
    far_hi = (tl.maximum(m0 - window + 1, 0) // BLOCK_N) * BLOCK_N
    near_lo = tl.maximum(tl.cdiv(tl.maximum(m0 + BLOCK_M - near_from, 0), BLOCK_N) * BLOCK_N, far_hi)
    return far_hi, near_lo


@autotune(
    configs=FWD_CONFIGS,
    key=["S", "HEAD_DIM", "BLEND"],
    prune_configs_by={"early_config_prune": _interpreter_keeps_small},
)
@triton.jit
def _fwd_kernel(
    q1_ptr, k1_ptr, q2_ptr, k2_ptr, v_ptr, o_ptr, lse_ptr, H, S, qk_scale, window, near_from, inv_transition,
    sq1b, sq1h, sq1s, sq1d, sk1b, sk1h, sk1s, sk1d, sq2b, sq2h, sq2s, sq2d, sk2b, sk2h, sk2s, sk2d,
    svb, svh, svs, svd, sob, soh, sos, sod,
    BLEND: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    tl.static_assert(BLOCK_M % BLOCK_N == 0)
    # Causal rows grow with the query position: the longest blocks start first, so the short ones fill the tail.
    m0 = (tl.num_programs(0) - 1 - tl.program_id(0)) * BLOCK_M
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    k1_ptr += b * sk1b + h * sk1h
    k2_ptr += b * sk2b + h * sk2h
    v_ptr += b * svb + h * svh
    rows = m0 + tl.arange(0, BLOCK_M)
    dcols = tl.arange(0, BLOCK_D)
    qmask = (rows[:, None] < S) & (dcols[None, :] < HEAD_DIM)
    q1 = tl.load(q1_ptr + b * sq1b + h * sq1h + rows[:, None] * sq1s + dcols[None, :] * sq1d, mask=qmask, other=0.0)
    q2 = tl.load(q2_ptr + b * sq2b + h * sq2h + rows[:, None] * sq2s + dcols[None, :] * sq2d, mask=qmask, other=0.0)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    far_hi, near_lo = _key_regions(m0, window, near_from, BLOCK_M, BLOCK_N)
    mid_hi = tl.minimum(near_lo, m0)
    end = tl.minimum(m0 + BLOCK_M, S)
    args = (k1_ptr, k2_ptr, v_ptr, sk1s, sk1d, sk2s, sk2d, svs, svd, rows, dcols)
    mix = (S, window, near_from, inv_transition, qk_scale)
    # Far keys: the second encoding alone. Straddling keys: both, masked only where they reach the diagonal.
    # Near keys: the first encoding alone, the diagonal blocks masked.
    acc, l_i, m_i = _attend_key_blocks(acc, l_i, m_i, q1, q2, *args, 0, far_hi, *mix,
                                       False, True, False, BLEND, HEAD_DIM, BLOCK_N)  # fmt: skip
    acc, l_i, m_i = _attend_key_blocks(acc, l_i, m_i, q1, q2, *args, far_hi, mid_hi, *mix,
                                       True, True, False, BLEND, HEAD_DIM, BLOCK_N)  # fmt: skip
    acc, l_i, m_i = _attend_key_blocks(acc, l_i, m_i, q1, q2, *args, mid_hi, tl.minimum(near_lo, end), *mix,
                                       True, True, True, BLEND, HEAD_DIM, BLOCK_N)  # fmt: skip
    acc, l_i, m_i = _attend_key_blocks(acc, l_i, m_i, q1, q2, *args, near_lo, tl.maximum(near_lo, m0), *mix,
                                       True, False, False, BLEND, HEAD_DIM, BLOCK_N)  # fmt: skip
    acc, l_i, m_i = _attend_key_blocks(acc, l_i, m_i, q1, q2, *args, tl.maximum(near_lo, m0), end, *mix,
                                       True, False, True, BLEND, HEAD_DIM, BLOCK_N)  # fmt: skip
    out = acc / l_i[:, None]
    o_ptrs = o_ptr + b * sob + h * soh + rows[:, None] * sos + dcols[None, :] * sod
    tl.store(o_ptrs, out.to(o_ptr.dtype.element_ty), mask=qmask)
    # The logsumexp in log2 units, what the backward subtracts to rebuild P.
    tl.store(lse_ptr + bh * S + rows, m_i + tl.math.log2(l_i), mask=rows < S)


# -- backward --------------------------------------------------------------------------------------------------------
@triton.jit
def _bwd_delta_kernel(
    o_ptr, do_ptr, delta_ptr, H, S, sob, soh, sos, sod, sdb, sdh, sds, sdd,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    dcols = tl.arange(0, BLOCK_D)
    mask = (rows[:, None] < S) & (dcols[None, :] < HEAD_DIM)
    o = tl.load(o_ptr + b * sob + h * soh + rows[:, None] * sos + dcols[None, :] * sod, mask=mask, other=0.0)
    do = tl.load(do_ptr + b * sdb + h * sdh + rows[:, None] * sds + dcols[None, :] * sdd, mask=mask, other=0.0)
    tl.store(delta_ptr + bh * S + rows, tl.sum(o.to(tl.float32) * do.to(tl.float32), 1), mask=rows < S)


@triton.jit
def _dkdv_query_blocks(
    dk1, dk2, dv, k1, k2, v, q1_ptr, q2_ptr, do_ptr, lse_ptr, delta_ptr, sq1s, sq1d, sq2s, sq2d, sds, sdd,
    keys, dcols, lo, hi, S, window, near_from, inv_transition, qk_scale,
    USE_S1: tl.constexpr, USE_S2: tl.constexpr, MASKED: tl.constexpr, BLEND: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    # Transposed scores, [keys, queries]: dk and dv accumulate over the queries without a transpose of P or dS.
    for m0 in range(lo, hi, BLOCK_M):
        rows = m0 + tl.arange(0, BLOCK_M)
        # Rows past the sequence load zeros (q, dO, lse, delta): their P is finite and their dS 0.
        qmask = (rows[:, None] < S) & (dcols[None, :] < HEAD_DIM)
        lse = tl.load(lse_ptr + rows, mask=rows < S, other=0.0)
        delta = tl.load(delta_ptr + rows, mask=rows < S, other=0.0)
        do = tl.load(do_ptr + rows[:, None] * sds + dcols[None, :] * sdd, mask=qmask, other=0.0)
        s, alpha, q1, q2 = _tile_scores(
            k1, k2, q1_ptr + rows[:, None] * sq1s + dcols[None, :] * sq1d,
            q2_ptr + rows[:, None] * sq2s + dcols[None, :] * sq2d, qmask, rows[None, :] - keys[:, None],
            window, near_from, inv_transition, qk_scale, USE_S1, USE_S2, MASKED, BLEND,
        )  # fmt: skip
        p = tl.math.exp2(s - lse[None, :])
        dv = tl.dot(p.to(do.dtype), do, dv)
        ds = p * (tl.dot(v, tl.trans(do)) - delta[None, :])
        if USE_S1 and USE_S2:
            dk1 = tl.dot((ds * (1.0 - alpha)).to(do.dtype), q1, dk1)
            dk2 = tl.dot((ds * alpha).to(do.dtype), q2, dk2)
        elif USE_S1:
            dk1 = tl.dot(ds.to(do.dtype), q1, dk1)
        else:
            dk2 = tl.dot(ds.to(do.dtype), q2, dk2)
    return dk1, dk2, dv


@autotune(
    configs=DKDV_CONFIGS,
    key=["S", "HEAD_DIM", "BLEND"],
    prune_configs_by={"early_config_prune": _interpreter_keeps_small},
)
@triton.jit
def _bwd_dkdv_kernel(
    q1_ptr, k1_ptr, q2_ptr, k2_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dk1_ptr, dk2_ptr, dv_ptr,
    H, S, scale, qk_scale, window, near_from, inv_transition,
    sq1b, sq1h, sq1s, sq1d, sk1b, sk1h, sk1s, sk1d, sq2b, sq2h, sq2s, sq2d, sk2b, sk2h, sk2s, sk2d,
    svb, svh, svs, svd, sdb, sdh, sds, sdd, sgb, sgh, sgs, sgd,
    BLEND: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    tl.static_assert(BLOCK_N % BLOCK_M == 0)
    n0 = tl.program_id(0) * BLOCK_N
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    keys = n0 + tl.arange(0, BLOCK_N)
    dcols = tl.arange(0, BLOCK_D)
    kmask = (keys[:, None] < S) & (dcols[None, :] < HEAD_DIM)
    tile = keys[:, None] * sgs + dcols[None, :] * sgd
    k1 = tl.load(k1_ptr + b * sk1b + h * sk1h + keys[:, None] * sk1s + dcols[None, :] * sk1d, mask=kmask, other=0.0)
    k2 = tl.load(k2_ptr + b * sk2b + h * sk2h + keys[:, None] * sk2s + dcols[None, :] * sk2d, mask=kmask, other=0.0)
    v = tl.load(v_ptr + b * svb + h * svh + keys[:, None] * svs + dcols[None, :] * svd, mask=kmask, other=0.0)
    dk1 = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    dk2 = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    # Query blocks [n0, near_hi) are all nearer than near_from, those from far_lo on all at least window away;
    # those in [n0, diag_hi) cross the diagonal.
    near_hi = ((n0 + near_from) // BLOCK_M) * BLOCK_M
    diag_hi = n0 + BLOCK_N
    far_lo = tl.maximum(tl.cdiv(n0 + BLOCK_N - 1 + window, BLOCK_M) * BLOCK_M, near_hi)
    past_diag = tl.maximum(diag_hi, near_hi)
    args = (q1_ptr + b * sq1b + h * sq1h, q2_ptr + b * sq2b + h * sq2h, do_ptr + b * sdb + h * sdh,
            lse_ptr + bh * S, delta_ptr + bh * S, sq1s, sq1d, sq2s, sq2d, sds, sdd, keys, dcols)  # fmt: skip
    mix = (S, window, near_from, inv_transition, qk_scale)
    lo, hi = n0, tl.minimum(tl.minimum(near_hi, diag_hi), S)
    dk1, dk2, dv = _dkdv_query_blocks(dk1, dk2, dv, k1, k2, v, *args, lo, hi, *mix,
                                      True, False, True, BLEND, HEAD_DIM, BLOCK_M)  # fmt: skip
    lo, hi = tl.minimum(near_hi, diag_hi), tl.minimum(diag_hi, S)
    dk1, dk2, dv = _dkdv_query_blocks(dk1, dk2, dv, k1, k2, v, *args, lo, hi, *mix,
                                      True, True, True, BLEND, HEAD_DIM, BLOCK_M)  # fmt: skip
    lo, hi = diag_hi, tl.minimum(past_diag, S)
    dk1, dk2, dv = _dkdv_query_blocks(dk1, dk2, dv, k1, k2, v, *args, lo, hi, *mix,
                                      True, False, False, BLEND, HEAD_DIM, BLOCK_M)  # fmt: skip
    lo, hi = past_diag, tl.minimum(far_lo, S)
    dk1, dk2, dv = _dkdv_query_blocks(dk1, dk2, dv, k1, k2, v, *args, lo, hi, *mix,
                                      True, True, False, BLEND, HEAD_DIM, BLOCK_M)  # fmt: skip
    lo, hi = far_lo, S
    dk1, dk2, dv = _dkdv_query_blocks(dk1, dk2, dv, k1, k2, v, *args, lo, hi, *mix,
                                      False, True, False, BLEND, HEAD_DIM, BLOCK_M)  # fmt: skip
    grad = b * sgb + h * sgh + tile
    tl.store(dk1_ptr + grad, (dk1 * scale).to(dk1_ptr.dtype.element_ty), mask=kmask)
    tl.store(dk2_ptr + grad, (dk2 * scale).to(dk2_ptr.dtype.element_ty), mask=kmask)
    tl.store(dv_ptr + grad, dv.to(dv_ptr.dtype.element_ty), mask=kmask)


@triton.jit
def _dq_key_blocks(
    dq1, dq2, q1, q2, do, lse, delta, k1_ptr, k2_ptr, v_ptr, sk1s, sk1d, sk2s, sk2d, svs, svd,
    rows, dcols, lo, hi, S, window, near_from, inv_transition, qk_scale,
    USE_S1: tl.constexpr, USE_S2: tl.constexpr, MASKED: tl.constexpr, BLEND: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    for n0 in range(lo, hi, BLOCK_N):
        keys = n0 + tl.arange(0, BLOCK_N)
        kmask = (dcols[None, :] < HEAD_DIM) & (keys[:, None] < S) if MASKED else dcols[None, :] < HEAD_DIM
        s, alpha, k1, k2 = _tile_scores(
            q1, q2, k1_ptr + keys[:, None] * sk1s + dcols[None, :] * sk1d,
            k2_ptr + keys[:, None] * sk2s + dcols[None, :] * sk2d, kmask, rows[:, None] - keys[None, :],
            window, near_from, inv_transition, qk_scale, USE_S1, USE_S2, MASKED, BLEND,
        )  # fmt: skip
        p = tl.math.exp2(s - lse[:, None])
        v = tl.load(v_ptr + keys[:, None] * svs + dcols[None, :] * svd, mask=kmask, other=0.0)
        ds = p * (tl.dot(do, tl.trans(v)) - delta[:, None])
        if USE_S1 and USE_S2:
            dq1 = tl.dot((ds * (1.0 - alpha)).to(do.dtype), k1, dq1)
            dq2 = tl.dot((ds * alpha).to(do.dtype), k2, dq2)
        elif USE_S1:
            dq1 = tl.dot(ds.to(do.dtype), k1, dq1)
        else:
            dq2 = tl.dot(ds.to(do.dtype), k2, dq2)
    return dq1, dq2


@autotune(
    configs=DQ_CONFIGS,
    key=["S", "HEAD_DIM", "BLEND"],
    prune_configs_by={"early_config_prune": _interpreter_keeps_small},
)
@triton.jit
def _bwd_dq_kernel(
    q1_ptr, k1_ptr, q2_ptr, k2_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dq1_ptr, dq2_ptr,
    H, S, scale, qk_scale, window, near_from, inv_transition,
    sq1b, sq1h, sq1s, sq1d, sk1b, sk1h, sk1s, sk1d, sq2b, sq2h, sq2s, sq2d, sk2b, sk2h, sk2s, sk2d,
    svb, svh, svs, svd, sdb, sdh, sds, sdd, sgb, sgh, sgs, sgd,
    BLEND: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    tl.static_assert(BLOCK_M % BLOCK_N == 0)
    m0 = (tl.num_programs(0) - 1 - tl.program_id(0)) * BLOCK_M
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    rows = m0 + tl.arange(0, BLOCK_M)
    dcols = tl.arange(0, BLOCK_D)
    qmask = (rows[:, None] < S) & (dcols[None, :] < HEAD_DIM)
    q1 = tl.load(q1_ptr + b * sq1b + h * sq1h + rows[:, None] * sq1s + dcols[None, :] * sq1d, mask=qmask, other=0.0)
    q2 = tl.load(q2_ptr + b * sq2b + h * sq2h + rows[:, None] * sq2s + dcols[None, :] * sq2d, mask=qmask, other=0.0)
    do = tl.load(do_ptr + b * sdb + h * sdh + rows[:, None] * sds + dcols[None, :] * sdd, mask=qmask, other=0.0)
    lse = tl.load(lse_ptr + bh * S + rows, mask=rows < S, other=0.0)
    delta = tl.load(delta_ptr + bh * S + rows, mask=rows < S, other=0.0)
    dq1 = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    dq2 = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    far_hi, near_lo = _key_regions(m0, window, near_from, BLOCK_M, BLOCK_N)
    mid_hi = tl.minimum(near_lo, m0)
    end = tl.minimum(m0 + BLOCK_M, S)
    args = (k1_ptr + b * sk1b + h * sk1h, k2_ptr + b * sk2b + h * sk2h, v_ptr + b * svb + h * svh,
            sk1s, sk1d, sk2s, sk2d, svs, svd, rows, dcols)  # fmt: skip
    mix = (S, window, near_from, inv_transition, qk_scale)
    # The forward's regions, in the same order.
    dq1, dq2 = _dq_key_blocks(dq1, dq2, q1, q2, do, lse, delta, *args, 0, far_hi, *mix,
                              False, True, False, BLEND, HEAD_DIM, BLOCK_N)  # fmt: skip
    dq1, dq2 = _dq_key_blocks(dq1, dq2, q1, q2, do, lse, delta, *args, far_hi, mid_hi, *mix,
                              True, True, False, BLEND, HEAD_DIM, BLOCK_N)  # fmt: skip
    dq1, dq2 = _dq_key_blocks(dq1, dq2, q1, q2, do, lse, delta, *args, mid_hi, tl.minimum(near_lo, end), *mix,
                              True, True, True, BLEND, HEAD_DIM, BLOCK_N)  # fmt: skip
    dq1, dq2 = _dq_key_blocks(dq1, dq2, q1, q2, do, lse, delta, *args, near_lo, tl.maximum(near_lo, m0), *mix,
                              True, False, False, BLEND, HEAD_DIM, BLOCK_N)  # fmt: skip
    dq1, dq2 = _dq_key_blocks(dq1, dq2, q1, q2, do, lse, delta, *args, tl.maximum(near_lo, m0), end, *mix,
                              True, False, True, BLEND, HEAD_DIM, BLOCK_N)  # fmt: skip
    grad = b * sgb + h * sgh + rows[:, None] * sgs + dcols[None, :] * sgd
    tl.store(dq1_ptr + grad, (dq1 * scale).to(dq1_ptr.dtype.element_ty), mask=qmask)
    tl.store(dq2_ptr + grad, (dq2 * scale).to(dq2_ptr.dtype.element_ty), mask=qmask)


# -- launchers -------------------------------------------------------------------------------------------------------
def _strides(*tensors):
    return [s for t in tensors for s in t.stride()]


def _backward(inputs, out, grad_out):
    q1, k1, q2, k2, v = (inputs[n] for n in ("q1", "k1", "q2", "k2", "v"))
    B, H, S, D = q1.shape
    scale, near_from, inv_transition, blend = scalars(
        q1, inputs["window"], inputs.get("transition", 0), inputs.get("scale")
    )
    lse = inputs["stash"]["lse"]
    delta = memory.empty((B * H, S), dtype=torch.float32, device=q1.device)
    block_d = head_block(D)
    _bwd_delta_kernel[(triton.cdiv(S, 64), B * H)](
        out, grad_out, delta, H, S, *_strides(out, grad_out), HEAD_DIM=D, BLOCK_D=block_d, BLOCK_M=64
    )
    # The gradients share one contiguous layout, so one set of strides serves all five stores.
    grads = {n: memory.empty((B, H, S, D), dtype=q1.dtype, device=q1.device) for n in ("q1", "k1", "q2", "k2", "v")}
    common = (H, S, scale, scale * LOG2E, inputs["window"], near_from, inv_transition,
              *_strides(q1, k1, q2, k2, v, grad_out, grads["q1"]))  # fmt: skip
    _bwd_dkdv_kernel[lambda meta: (triton.cdiv(S, meta["BLOCK_N"]), B * H)](
        q1, k1, q2, k2, v, grad_out, lse, delta, grads["k1"], grads["k2"], grads["v"], *common,
        BLEND=blend, HEAD_DIM=D, BLOCK_D=block_d,
    )  # fmt: skip
    _bwd_dq_kernel[lambda meta: (triton.cdiv(S, meta["BLOCK_M"]), B * H)](
        q1, k1, q2, k2, v, grad_out, lse, delta, grads["q1"], grads["q2"], *common,
        BLEND=blend, HEAD_DIM=D, BLOCK_D=block_d,
    )  # fmt: skip
    return grads


@register(
    op="windowed_rope_attention",
    name="fused",
    version="1.0.1",
    dtypes=FLOATS,
    modes=("default", "blend"),
    limits={"D": (1, MAX_HEAD_DIM)},
    backward=_backward,
)
def windowed_rope_attention_fused(q1, k1, q2, k2, v, window, transition=0, scale=None, *, out, stash):
    """Flash-style single kernel: online softmax over key blocks, both QK^T only in blocks straddling the window."""
    B, H, S, D = q1.shape
    scale, near_from, inv_transition, blend = scalars(q1, window, transition, scale)
    lse = memory.empty((B * H, S), dtype=torch.float32, device=q1.device)
    _fwd_kernel[lambda meta: (triton.cdiv(S, meta["BLOCK_M"]), B * H)](
        q1, k1, q2, k2, v, out, lse, H, S, scale * LOG2E, window, near_from, inv_transition,
        *_strides(q1, k1, q2, k2, v, out),
        BLEND=blend, HEAD_DIM=D, BLOCK_D=head_block(D),
    )  # fmt: skip
    if stash is not None:
        stash["lse"] = lse
    return out
