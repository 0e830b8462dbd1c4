"""attention, flash: the FlashAttention-2 forward (variants/attention/_flash.py), which also stores each row's
logsumexp when a backward will follow, and the FlashAttention-2 backward in three atomic-free kernels:

1. ``delta = rowsum(dO * O)``, the term every row of ``dS = P * (dP - delta)`` subtracts;
2. one program per BLOCK_N1 keys of a key/value head, looping over the query tiles (of every query head of its
   group, for grouped-query attention) that see those keys: it rebuilds ``P^T`` from the logsumexp and
   accumulates ``dV += P^T dO`` and ``dK += dS^T Q`` in registers, written once;
3. one program per BLOCK_M2 query rows looping over the keys they see: ``dQ += dS K``.

Neither pass materializes anything of size Sq x Sk, and no gradient is summed with atomics: the result is
deterministic. Like the forward, each loop runs unmasked tiles apart from the diagonal and ragged ones.
"""

import torch
import triton
import triton.language as tl

from kernels import backend, memory
from kernels.dtypes import FLOATS
from kernels.registry import register
from variants.attention._flash import launch_forward, new_lse

LOG2_E = 1.4426950408889634


def backward_config(head_dim: int, itemsize: int) -> dict:
    """Tiles of the backward: FlashAttention-2's, as Triton's fused-attention tutorial tunes them for Hopper
    (narrow query steps for the dK/dV pass, narrow key steps for the dQ pass). BLOCK_N1 is a multiple of BLOCK_M1
    and BLOCK_M2 of BLOCK_N2, so the causal diagonal covers whole steps. 128-wide heads get 8 warps: the dK and dV
    accumulators of 128 keys are 2 x 64 KiB of fp32, 256 registers a thread over 4 warps. Fewer stages for fp32
    tiles, which take twice the shared memory; small tiles under the interpreter."""
    if backend.interpreting():
        return {"BLOCK_M1": 16, "BLOCK_N1": 32, "BLOCK_M2": 32, "BLOCK_N2": 16, "num_warps": 4, "num_stages": 1}
    return {
        "BLOCK_M1": 32,
        "BLOCK_N1": 128,
        "BLOCK_M2": 128,
        "BLOCK_N2": 32,
        "num_warps": 8 if head_dim >= 128 else 4,
        "num_stages": 2 if itemsize == 4 else 3,
    }


@triton.jit
def _delta_kernel(
    o_ptr, do_ptr, delta_ptr, num_heads, seq_q,
    stride_ob, stride_oh, stride_om, stride_od, stride_dob, stride_doh, stride_dom, stride_dod,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    bh = tl.program_id(1)
    batch, head = bh // num_heads, bh % num_heads
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, HEAD_DIM)
    mask = rows[:, None] < seq_q
    o = tl.load(o_ptr + batch.to(tl.int64) * stride_ob + head.to(tl.int64) * stride_oh
                + rows[:, None] * stride_om + dims[None, :] * stride_od, mask=mask, other=0.0)  # fmt: skip
    do = tl.load(do_ptr + batch.to(tl.int64) * stride_dob + head.to(tl.int64) * stride_doh
                 + rows[:, None] * stride_dom + dims[None, :] * stride_dod, mask=mask, other=0.0)  # fmt: skip
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)
    tl.store(delta_ptr + bh.to(tl.int64) * seq_q + rows, delta, mask=rows < seq_q)


@triton.jit
def _dkdv_tiles(
    dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qm, stride_qd, stride_dom, stride_dod,
    cols, lo, hi, seq_q, seq_k, qk_scale,
    MASKED: tl.constexpr, CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    dims = tl.arange(0, HEAD_DIM)
    for start_m in range(lo, hi, BLOCK_M):
        start_m = tl.multiple_of(start_m, BLOCK_M)
        rows = start_m + tl.arange(0, BLOCK_M)
        # Transposed tiles [HEAD_DIM, BLOCK_M], so that the key dimension stays the row dimension throughout.
        q_t_ptrs = q_base + rows[None, :] * stride_qm + dims[:, None] * stride_qd
        do_ptrs = do_base + rows[:, None] * stride_dom + dims[None, :] * stride_dod
        if MASKED:
            q_t = tl.load(q_t_ptrs, mask=rows[None, :] < seq_q, other=0.0)
            do = tl.load(do_ptrs, mask=rows[:, None] < seq_q, other=0.0)
            lse = tl.load(lse_base + rows, mask=rows < seq_q, other=0.0)
            delta = tl.load(delta_base + rows, mask=rows < seq_q, other=0.0)
        else:
            q_t = tl.load(q_t_ptrs)
            do = tl.load(do_ptrs)
            lse = tl.load(lse_base + rows)
            delta = tl.load(delta_base + rows)
        # P^T [BLOCK_N, BLOCK_M], rebuilt from the forward's base-2 logsumexp.
        p_t = tl.math.exp2(tl.dot(k, q_t) * qk_scale - lse[None, :])
        if MASKED:
            visible = rows[None, :] < seq_q
            if CAUSAL:
                visible = visible & (cols[:, None] <= rows[None, :])
            p_t = tl.where(visible, p_t, 0.0)
        dv = tl.dot(p_t.to(do.dtype), do, dv)
        dp_t = tl.dot(v, tl.trans(do))
        ds_t = p_t * (dp_t - delta[None, :])
        dk = tl.dot(ds_t.to(q_t.dtype), tl.trans(q_t), dk)
    return dk, dv


@triton.jit
def key_tile_ranges(start_m, seq_k, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """``(lo, hi)`` for the dQ pass over queries [start_m, start_m + BLOCK_M): key tiles [0, lo) need no mask,
    [lo, hi) do. BLOCK_M is a multiple of BLOCK_N, so with a causal mask every key left of start_m is visible to
    every query row and the diagonal covers whole key tiles."""
    full_k = (seq_k // BLOCK_N) * BLOCK_N
    if CAUSAL:
        lo = tl.minimum(start_m, full_k)
        hi = tl.minimum(start_m + BLOCK_M, seq_k)
    else:
        lo = full_k
        hi = seq_k
    return lo, hi


@triton.jit
def _dkdv_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr, sm_scale, num_kv_heads, group, seq_q, seq_k,
    stride_qb, stride_qh, stride_qm, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd, stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dkb, stride_dkh, stride_dkn, stride_dkd, stride_dvb, stride_dvh, stride_dvn, stride_dvd,
    CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M1: tl.constexpr, BLOCK_N1: tl.constexpr,
):  # fmt: skip
    start_n = tl.program_id(0) * BLOCK_N1
    bh = tl.program_id(1)
    batch, kv_head = bh // num_kv_heads, bh % num_kv_heads
    cols = start_n + tl.arange(0, BLOCK_N1)
    dims = tl.arange(0, HEAD_DIM)
    col_ok = cols[:, None] < seq_k
    k_base = k_ptr + batch.to(tl.int64) * stride_kb + kv_head.to(tl.int64) * stride_kh
    v_base = v_ptr + batch.to(tl.int64) * stride_vb + kv_head.to(tl.int64) * stride_vh
    k = tl.load(k_base + cols[:, None] * stride_kn + dims[None, :] * stride_kd, mask=col_ok, other=0.0)
    v = tl.load(v_base + cols[:, None] * stride_vn + dims[None, :] * stride_vd, mask=col_ok, other=0.0)
    dk = tl.zeros((BLOCK_N1, HEAD_DIM), dtype=tl.float32)
    dv = tl.zeros((BLOCK_N1, HEAD_DIM), dtype=tl.float32)
    qk_scale = sm_scale * 1.4426950408889634

    # Query tiles [lo, mid) touch the causal diagonal and need the mask; [mid, full_q) need none; [full_q, seq_q)
    # is the ragged end. Queries above start_n see none of these keys (top-left causal alignment).
    full_q = (seq_q // BLOCK_M1) * BLOCK_M1
    if CAUSAL:
        lo = tl.minimum(start_n, seq_q)
        mid = tl.minimum(start_n + BLOCK_N1, seq_q)
    else:
        lo = 0
        mid = 0
    mid_full = tl.maximum(tl.minimum(full_q, seq_q), mid)
    # Grouped-query attention: the gradient of a key/value head sums over the query heads that read it. They are
    # all handled here, so no two programs write one dK or dV row.
    for g in range(0, group):
        head = kv_head * group + g
        bhq = batch * (num_kv_heads * group) + head
        q_base = q_ptr + batch.to(tl.int64) * stride_qb + head.to(tl.int64) * stride_qh
        do_base = do_ptr + batch.to(tl.int64) * stride_dob + head.to(tl.int64) * stride_doh
        lse_base = lse_ptr + bhq.to(tl.int64) * seq_q
        delta_base = delta_ptr + bhq.to(tl.int64) * seq_q
        dk, dv = _dkdv_tiles(
            dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qm, stride_qd, stride_dom, stride_dod,
            cols, lo, mid, seq_q, seq_k, qk_scale, MASKED=True, CAUSAL=CAUSAL, HEAD_DIM=HEAD_DIM, BLOCK_M=BLOCK_M1,
        )  # fmt: skip
        dk, dv = _dkdv_tiles(
            dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qm, stride_qd, stride_dom, stride_dod,
            cols, mid, mid_full, seq_q, seq_k, qk_scale,
            MASKED=False, CAUSAL=CAUSAL, HEAD_DIM=HEAD_DIM, BLOCK_M=BLOCK_M1,
        )  # fmt: skip
        dk, dv = _dkdv_tiles(
            dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qm, stride_qd, stride_dom, stride_dod,
            cols, mid_full, seq_q, seq_q, seq_k, qk_scale,
            MASKED=True, CAUSAL=CAUSAL, HEAD_DIM=HEAD_DIM, BLOCK_M=BLOCK_M1,
        )  # fmt: skip
    # dS was formed from base-2 scaled scores; dK = sm_scale * dS^T Q in natural units.
    dk = dk * sm_scale
    dk_base = dk_ptr + batch.to(tl.int64) * stride_dkb + kv_head.to(tl.int64) * stride_dkh
    dv_base = dv_ptr + batch.to(tl.int64) * stride_dvb + kv_head.to(tl.int64) * stride_dvh
    tl.store(dk_base + cols[:, None] * stride_dkn + dims[None, :] * stride_dkd, dk.to(dk_ptr.dtype.element_ty),
             mask=col_ok)  # fmt: skip
    tl.store(dv_base + cols[:, None] * stride_dvn + dims[None, :] * stride_dvd, dv.to(dv_ptr.dtype.element_ty),
             mask=col_ok)  # fmt: skip


@triton.jit
def _dq_tiles(
    dq, q, do, lse, delta, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
    rows, lo, hi, seq_k, qk_scale,
    MASKED: tl.constexpr, CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    dims = tl.arange(0, HEAD_DIM)
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        cols = start_n + tl.arange(0, BLOCK_N)
        k_t_ptrs = k_base + cols[None, :] * stride_kn + dims[:, None] * stride_kd
        v_t_ptrs = v_base + cols[None, :] * stride_vn + dims[:, None] * stride_vd
        if MASKED:
            k_t = tl.load(k_t_ptrs, mask=cols[None, :] < seq_k, other=0.0)
            v_t = tl.load(v_t_ptrs, mask=cols[None, :] < seq_k, other=0.0)
        else:
            k_t = tl.load(k_t_ptrs)
            v_t = tl.load(v_t_ptrs)
        p = tl.math.exp2(tl.dot(q, k_t) * qk_scale - lse[:, None])
        if MASKED:
            visible = cols[None, :] < seq_k
            if CAUSAL:
                visible = visible & (cols[None, :] <= rows[:, None])
            p = tl.where(visible, p, 0.0)
        dp = tl.dot(do, v_t)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k_t.dtype), tl.trans(k_t), dq)
    return dq


@triton.jit
def _dq_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr, sm_scale, num_heads, group, seq_q, seq_k,
    stride_qb, stride_qh, stride_qm, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd, stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dqb, stride_dqh, stride_dqm, stride_dqd,
    CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M2: tl.constexpr, BLOCK_N2: tl.constexpr,
):  # fmt: skip
    # Longest programs first, as in the forward.
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0) if CAUSAL else tl.program_id(0)
    start_m = pid_m * BLOCK_M2
    bh = tl.program_id(1)
    batch, head = bh // num_heads, bh % num_heads
    kv_head = head // group
    rows = start_m + tl.arange(0, BLOCK_M2)
    dims = tl.arange(0, HEAD_DIM)
    row_ok = rows < seq_q
    q_base = q_ptr + batch.to(tl.int64) * stride_qb + head.to(tl.int64) * stride_qh
    do_base = do_ptr + batch.to(tl.int64) * stride_dob + head.to(tl.int64) * stride_doh
    q = tl.load(q_base + rows[:, None] * stride_qm + dims[None, :] * stride_qd, mask=row_ok[:, None], other=0.0)
    do = tl.load(do_base + rows[:, None] * stride_dom + dims[None, :] * stride_dod, mask=row_ok[:, None], other=0.0)
    lse = tl.load(lse_ptr + bh.to(tl.int64) * seq_q + rows, mask=row_ok, other=0.0)
    delta = tl.load(delta_ptr + bh.to(tl.int64) * seq_q + rows, mask=row_ok, other=0.0)
    k_base = k_ptr + batch.to(tl.int64) * stride_kb + kv_head.to(tl.int64) * stride_kh
    v_base = v_ptr + batch.to(tl.int64) * stride_vb + kv_head.to(tl.int64) * stride_vh
    dq = tl.zeros((BLOCK_M2, HEAD_DIM), dtype=tl.float32)
    qk_scale = sm_scale * 1.4426950408889634

    lo, hi = key_tile_ranges(start_m, seq_k, CAUSAL, BLOCK_M2, BLOCK_N2)
    dq = _dq_tiles(
        dq, q, do, lse, delta, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd, rows, 0, lo, seq_k,
        qk_scale, MASKED=False, CAUSAL=CAUSAL, HEAD_DIM=HEAD_DIM, BLOCK_N=BLOCK_N2,
    )  # fmt: skip
    dq = _dq_tiles(
        dq, q, do, lse, delta, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd, rows, lo, hi, seq_k,
        qk_scale, MASKED=True, CAUSAL=CAUSAL, HEAD_DIM=HEAD_DIM, BLOCK_N=BLOCK_N2,
    )  # fmt: skip
    dq = dq * sm_scale
    dq_base = dq_ptr + batch.to(tl.int64) * stride_dqb + head.to(tl.int64) * stride_dqh
    tl.store(dq_base + rows[:, None] * stride_dqm + dims[None, :] * stride_dqd, dq.to(dq_ptr.dtype.element_ty),
             mask=row_ok[:, None])  # fmt: skip


def flash_backward(inputs, out, grad_out):
    """dQ, dK, dV of the forward whose logsumexp is ``inputs["stash"]["lse"]``: delta, then the dK/dV pass, then
    the dQ pass."""
    q, k, v = inputs["q"], inputs["k"], inputs["v"]
    causal, scale = inputs["causal"], inputs["scale"]
    lse = inputs["stash"]["lse"]
    do = grad_out
    B, Hq, Sq, D = q.shape
    Hkv, Sk = k.shape[1], k.shape[2]
    sm_scale = D**-0.5 if scale is None else float(scale)
    cfg = backward_config(D, q.element_size())
    warps = {"num_warps": cfg["num_warps"], "num_stages": cfg["num_stages"]}

    delta = memory.empty((B * Hq, Sq), dtype=torch.float32, device=q.device)
    _delta_kernel[(triton.cdiv(Sq, cfg["BLOCK_M2"]), B * Hq)](
        out, do, delta, Hq, Sq, *out.stride(), *do.stride(), HEAD_DIM=D, BLOCK_M=cfg["BLOCK_M2"], num_warps=4
    )
    dq, dk, dv = (memory.empty(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))
    _dkdv_kernel[(triton.cdiv(Sk, cfg["BLOCK_N1"]), B * Hkv)](
        q, k, v, do, lse, delta, dk, dv, sm_scale, Hkv, Hq // Hkv, Sq, Sk,
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dk.stride(), *dv.stride(),
        CAUSAL=bool(causal), HEAD_DIM=D, BLOCK_M1=cfg["BLOCK_M1"], BLOCK_N1=cfg["BLOCK_N1"], **warps,
    )  # fmt: skip
    _dq_kernel[(triton.cdiv(Sq, cfg["BLOCK_M2"]), B * Hq)](
        q, k, v, do, lse, delta, dq, sm_scale, Hq, Hq // Hkv, Sq, Sk,
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dq.stride(),
        CAUSAL=bool(causal), HEAD_DIM=D, BLOCK_M2=cfg["BLOCK_M2"], BLOCK_N2=cfg["BLOCK_N2"], **warps,
    )  # fmt: skip
    return {"q": dq, "k": dk, "v": dv}


def _backward(inputs, out, grad_out):
    return flash_backward(inputs, out, grad_out)


@register(op="attention", name="flash", version="1.0.2", dtypes=FLOATS, backward=_backward)
def attention_flash(q, k, v, causal, scale, *, out, stash):
    """Fused online-softmax forward (FlashAttention-2) storing the logsumexp for its FA2 backward."""
    lse = new_lse(q) if stash is not None else None
    launch_forward(q, k, v, out, causal=causal, scale=scale, lse=lse)
    if stash is not None:
        stash["lse"] = lse
    return out
