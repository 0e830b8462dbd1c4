"""The backward of flash_hopper: flash's atomic-free FlashAttention-2 backward (variants/attention/flash.py), with
Q, K, V and dO read and dQ, dK and dV written through TMA tensor descriptors.

Three launches, as in flash:

1. ``delta = rowsum(dO * O)``: flash's own pointer kernel (a streaming pass over O and dO, any strides);
2. the dK/dV pass, one program per BLOCK_N1 keys of a (batch, key/value head): K and V stay in shared memory and
   registers while the program walks the query tiles of every query head of its group, rebuilding
   ``P^T = exp2(K Q^T * qk_scale - lse)`` from the forward's base-2 logsumexp and accumulating
   ``dV += P^T dO`` and ``dK += dS^T Q`` with ``dS^T = P^T * (V dO^T - delta)``; dK and dV are written once, so
   a key/value head shared by a group of query heads needs no atomics;
3. the dQ pass, one program per BLOCK_M2 query rows: ``dQ += dS K`` over the keys those rows see.

The result is deterministic: no gradient is summed with atomics, and each sum runs in a fixed order.

Descriptors are those of the forward (_flash_tma.py): 3-D views [B * H, S, D] with blocks [1, BLOCK, D], so
rows past S load as zeros and stores past S are clipped, and an operand whose layout TMA cannot address is copied
into a contiguous buffer once for both passes. lse and delta are [B * Hq, Sq] fp32 rows, read through pointers.

As in the forward, each loop runs its unmasked tiles apart from the few that need a mask (the causal diagonal, a
ragged end), and the scale is folded: ``s * qk_scale - lse`` is one multiply-add per score before its exp2, and
the softmax scale of dK and dQ is applied once to each accumulator, after its loop. Unlike the forward's online
softmax the backward takes no row maximum, so it holds for any scale, zero and negative ones included.

Each pass has its own descriptors, whose blocks are that pass's tiles: the autotuners' pre-hooks (or the
hand-launch functions, for GPU sweeps) set them.

An underscore module: it registers nothing.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import backend, memory
from variants.attention._flash_tma import _dense, _descriptor
from variants.attention.flash import _delta_kernel, key_tile_ranges


# -- the dK/dV pass ---------------------------------------------------------------------------------------------
@triton.jit
def _dkdv_tiles(
    dk, dv, k, v, q_desc, do_desc, lse_base, delta_base, q_row, cols, lo, hi, seq_q, qk_scale,
    MASKED: tl.constexpr, CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M1: tl.constexpr,
):  # fmt: skip
    for start_m in range(lo, hi, BLOCK_M1):
        start_m = tl.multiple_of(start_m, BLOCK_M1)
        rows = start_m + tl.arange(0, BLOCK_M1)
        # Q and dO rows past Sq arrive as zeros.
        q = tl.reshape(q_desc.load([q_row, start_m, 0]), (BLOCK_M1, HEAD_DIM))
        do = tl.reshape(do_desc.load([q_row, start_m, 0]), (BLOCK_M1, HEAD_DIM))
        if MASKED:
            lse = tl.load(lse_base + rows, mask=rows < seq_q, other=0.0)
            delta = tl.load(delta_base + rows, mask=rows < seq_q, other=0.0)
        else:
            lse = tl.load(lse_base + rows)
            delta = tl.load(delta_base + rows)
        # P^T [BLOCK_N1, BLOCK_M1]: keys stay the row dimension, so dK and dV accumulate as plain [keys, D] tiles
        # and P^T, dS^T are the register operands of their dots. The scale rides in the exp2's multiply-add.
        p_t = tl.math.exp2(tl.dot(k, tl.trans(q)) * qk_scale - lse[None, :])
        if MASKED:
            # Zeroing P^T (rather than the scores) is right for a scale of any sign. Rows past Sq would contribute
            # nothing anyway (their dO and Q are zeros); the mask keeps that from resting on a padded lse.
            visible = rows[None, :] < seq_q
            if CAUSAL:
                visible = visible & (cols[:, None] <= rows[None, :])
            p_t = tl.where(visible, p_t, 0.0)
        dv = tl.dot(p_t.to(do.dtype), do, dv)
        dp_t = tl.dot(v, tl.trans(do))
        ds_t = p_t * (dp_t - delta[None, :])
        dk = tl.dot(ds_t.to(q.dtype), q, dk)
    return dk, dv


@triton.jit
def dkdv_tma_kernel(
    q_desc, k_desc, v_desc, do_desc, dk_desc, dv_desc, lse_ptr, delta_ptr, sm_scale, group, seq_q, seq_k,
    CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M1: tl.constexpr, BLOCK_N1: tl.constexpr,
):  # fmt: skip
    # Blocks: [1, BLOCK_M1, HEAD_DIM] for q and do, [1, BLOCK_N1, HEAD_DIM] for k, v, dk and dv. With a causal mask
    # the programs of the first keys see the most queries; they already come first in the grid.
    start_n = tl.program_id(0) * BLOCK_N1
    # kv_row = batch * Hkv + kv_head indexes the [B * Hkv, Sk, D] views; the query heads of its group are rows
    # kv_row * group + g of the [B * Hq, Sq, D] ones (query head h reads key/value head h // group).
    kv_row = tl.program_id(1)
    cols = start_n + tl.arange(0, BLOCK_N1)
    # K and V rows past Sk load as zeros; the dK and dV rows they give are clipped by the stores.
    k = tl.reshape(k_desc.load([kv_row, start_n, 0]), (BLOCK_N1, HEAD_DIM))
    v = tl.reshape(v_desc.load([kv_row, start_n, 0]), (BLOCK_N1, HEAD_DIM))
    dk = tl.zeros((BLOCK_N1, HEAD_DIM), dtype=tl.float32)
    dv = tl.zeros((BLOCK_N1, HEAD_DIM), dtype=tl.float32)
    qk_scale = sm_scale * 1.4426950408889634

    # Query tiles [lo, mid) cross the causal diagonal of these keys; [mid, full_q) need no mask; [full_q, seq_q) is
    # the ragged end. Queries above start_n see none of these keys (top-left alignment), so causal starts at lo.
    # BLOCK_N1 is a multiple of BLOCK_M1, so mid falls on a tile boundary unless it is seq_q itself.
    full_q = (seq_q // BLOCK_M1) * BLOCK_M1
    if CAUSAL:
        lo = tl.minimum(start_n, seq_q)
        mid = tl.minimum(start_n + BLOCK_N1, seq_q)
    else:
        lo = 0
        mid = 0
    mid_full = tl.maximum(full_q, mid)
    # Grouped-query attention: every query head that reads this key/value head adds to its dK and dV, all in this
    # program, so no two programs write one row.
    for g in range(0, group):
        q_row = kv_row * group + g
        lse_base = lse_ptr + q_row.to(tl.int64) * seq_q
        delta_base = delta_ptr + q_row.to(tl.int64) * seq_q
        dk, dv = _dkdv_tiles(
            dk, dv, k, v, q_desc, do_desc, lse_base, delta_base, q_row, cols, lo, mid, seq_q, qk_scale,
            MASKED=True, CAUSAL=CAUSAL, HEAD_DIM=HEAD_DIM, BLOCK_M1=BLOCK_M1,
        )  # fmt: skip
        dk, dv = _dkdv_tiles(
            dk, dv, k, v, q_desc, do_desc, lse_base, delta_base, q_row, cols, mid, mid_full, seq_q, qk_scale,
            MASKED=False, CAUSAL=CAUSAL, HEAD_DIM=HEAD_DIM, BLOCK_M1=BLOCK_M1,
        )  # fmt: skip
        dk, dv = _dkdv_tiles(
            dk, dv, k, v, q_desc, do_desc, lse_base, delta_base, q_row, cols, mid_full, seq_q, seq_q, qk_scale,
            MASKED=True, CAUSAL=CAUSAL, HEAD_DIM=HEAD_DIM, BLOCK_M1=BLOCK_M1,
        )  # fmt: skip
    # dS was taken of base-2 scaled scores with the scale folded out: dK = sm_scale * dS^T Q in natural units.
    dk = dk * sm_scale
    dk_desc.store([kv_row, start_n, 0], tl.reshape(dk.to(k.dtype), (1, BLOCK_N1, HEAD_DIM)))
    dv_desc.store([kv_row, start_n, 0], tl.reshape(dv.to(v.dtype), (1, BLOCK_N1, HEAD_DIM)))


# -- the dQ pass ------------------------------------------------------------------------------------------------
@triton.jit
def _dq_tiles(
    dq, q, do, lse, delta, k_desc, v_desc, kv_row, rows, lo, hi, seq_k, qk_scale,
    MASKED: tl.constexpr, CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_N2: tl.constexpr,
):  # fmt: skip
    for start_n in range(lo, hi, BLOCK_N2):
        start_n = tl.multiple_of(start_n, BLOCK_N2)
        k = tl.reshape(k_desc.load([kv_row, start_n, 0]), (BLOCK_N2, HEAD_DIM))
        v = tl.reshape(v_desc.load([kv_row, start_n, 0]), (BLOCK_N2, HEAD_DIM))
        p = tl.math.exp2(tl.dot(q, tl.trans(k)) * qk_scale - lse[:, None])
        if MASKED:
            # Key columns past Sk load as zeros but still score 0, and exp2(-lse) may overflow to inf, which
            # would turn into NaN against their zero K rows: they are masked like the causal ones.
            cols = start_n + tl.arange(0, BLOCK_N2)
            visible = cols[None, :] < seq_k
            if CAUSAL:
                visible = visible & (cols[None, :] <= rows[:, None])
            p = tl.where(visible, p, 0.0)
        dp = tl.dot(do, tl.trans(v))
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq)
    return dq


@triton.jit
def dq_tma_kernel(
    q_desc, k_desc, v_desc, do_desc, dq_desc, lse_ptr, delta_ptr, sm_scale, group, seq_q, seq_k,
    CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M2: tl.constexpr, BLOCK_N2: tl.constexpr,
):  # fmt: skip
    # Blocks: [1, BLOCK_M2, HEAD_DIM] for q, do and dq, [1, BLOCK_N2, HEAD_DIM] for k and v. With a causal mask the
    # last query tiles see the most keys: launch them first, so the short ones fill the tail of the grid.
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0) if CAUSAL else tl.program_id(0)
    start_m = pid_m * BLOCK_M2
    q_row = tl.program_id(1)
    kv_row = q_row // group
    rows = start_m + tl.arange(0, BLOCK_M2)
    row_ok = rows < seq_q
    # Rows past Sq load as zeros, with lse and delta 0: finite, and their dQ rows are clipped by the store.
    q = tl.reshape(q_desc.load([q_row, start_m, 0]), (BLOCK_M2, HEAD_DIM))
    do = tl.reshape(do_desc.load([q_row, start_m, 0]), (BLOCK_M2, HEAD_DIM))
    lse = tl.load(lse_ptr + q_row.to(tl.int64) * seq_q + rows, mask=row_ok, other=0.0)
    delta = tl.load(delta_ptr + q_row.to(tl.int64) * seq_q + rows, mask=row_ok, other=0.0)
    dq = tl.zeros((BLOCK_M2, HEAD_DIM), dtype=tl.float32)
    qk_scale = sm_scale * 1.4426950408889634

    lo, hi = key_tile_ranges(start_m, seq_k, CAUSAL, BLOCK_M2, BLOCK_N2)
    dq = _dq_tiles(
        dq, q, do, lse, delta, k_desc, v_desc, kv_row, rows, 0, lo, seq_k, qk_scale,
        MASKED=False, CAUSAL=CAUSAL, HEAD_DIM=HEAD_DIM, BLOCK_N2=BLOCK_N2,
    )  # fmt: skip
    dq = _dq_tiles(
        dq, q, do, lse, delta, k_desc, v_desc, kv_row, rows, lo, hi, seq_k, qk_scale,
        MASKED=True, CAUSAL=CAUSAL, HEAD_DIM=HEAD_DIM, BLOCK_N2=BLOCK_N2,
    )  # fmt: skip
    dq = dq * sm_scale
    dq_desc.store([q_row, start_m, 0], tl.reshape(dq.to(q.dtype), (1, BLOCK_M2, HEAD_DIM)))


# -- configs ----------------------------------------------------------------------------------------------------
def _fit_blocks(nargs: dict, tiles: dict[str, str]) -> None:
    for name, tile in tiles.items():
        desc = nargs[name]
        desc.block_shape = [1, nargs[tile], desc.block_shape[-1]]


_DKDV_TILES = {"q_desc": "BLOCK_M1", "do_desc": "BLOCK_M1"} | dict.fromkeys(
    ("k_desc", "v_desc", "dk_desc", "dv_desc"), "BLOCK_N1"
)
_DQ_TILES = {"k_desc": "BLOCK_N2", "v_desc": "BLOCK_N2"} | dict.fromkeys(("q_desc", "do_desc", "dq_desc"), "BLOCK_M2")


def _fit_dkdv_blocks(nargs: dict) -> None:
    """Autotuner pre-hook of the dK/dV pass: give its descriptors the blocks of the config about to run (the blocks
    are part of each descriptor's type, so each config compiles its own kernel)."""
    _fit_blocks(nargs, _DKDV_TILES)


def _fit_dq_blocks(nargs: dict) -> None:
    """Autotuner pre-hook of the dQ pass: give its descriptors the blocks of the config about to run."""
    _fit_blocks(nargs, _DQ_TILES)


def dkdv_config(block_m1: int, block_n1: int, warps: int, stages: int) -> triton.Config:
    return triton.Config(
        {"BLOCK_M1": block_m1, "BLOCK_N1": block_n1}, num_warps=warps, num_stages=stages, pre_hook=_fit_dkdv_blocks
    )


def dq_config(block_m2: int, block_n2: int, warps: int, stages: int) -> triton.Config:
    return triton.Config(
        {"BLOCK_M2": block_m2, "BLOCK_N2": block_n2}, num_warps=warps, num_stages=stages, pre_hook=_fit_dq_blocks
    )


# Hopper. dK/dV: 64 or 128 keys a program held across the loop (their fp32 dK and dV accumulators are what bounds
# the tile: 2 x 64 KiB at 128 keys and head_dim 128), narrow query steps of 32 or 64 rows streamed 2 or 3 deep. dQ:
# the mirror image, 64 or 128 query rows held and 32- or 64-key steps streamed. 4 or 8 warps (one or two
# warpgroups of 64-row wgmma).
DKDV_CONFIGS = [
    dkdv_config(m1, n1, warps, stages) for m1 in (32, 64) for n1 in (64, 128) for warps in (4, 8) for stages in (2, 3)
]
DQ_CONFIGS = [
    dq_config(m2, n2, warps, stages) for m2 in (64, 128) for n2 in (32, 64) for warps in (4, 8) for stages in (2, 3)
]
# Under the interpreter a config is run, not timed: small tiles that still take several steps over the odd CPU test
# lengths, with the held tile twice the streamed one so the causal diagonal spans two steps.
INTERPRETER_DKDV_CONFIG = dkdv_config(16, 32, 4, 1)
INTERPRETER_DQ_CONFIG = dq_config(32, 16, 4, 1)


def prune_dkdv(configs, named_args, **kwargs):
    """``early_config_prune`` for the dK/dV autotuner: the causal split needs BLOCK_N1 to be a multiple of
    BLOCK_M1; the interpreter runs INTERPRETER_DKDV_CONFIG alone."""
    if backend.interpreting():
        return [INTERPRETER_DKDV_CONFIG]
    return [c for c in configs if c.kwargs["BLOCK_N1"] % c.kwargs["BLOCK_M1"] == 0]


def prune_dq(configs, named_args, **kwargs):
    """``early_config_prune`` for the dQ autotuner: the causal split needs BLOCK_M2 to be a multiple of BLOCK_N2;
    the interpreter runs INTERPRETER_DQ_CONFIG alone."""
    if backend.interpreting():
        return [INTERPRETER_DQ_CONFIG]
    return [c for c in configs if c.kwargs["BLOCK_M2"] % c.kwargs["BLOCK_N2"] == 0]


# -- launchers --------------------------------------------------------------------------------------------------
def addressable(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself if TMA can take its [B * H, S, D] view, else a contiguous copy (made once, for both passes)."""
    return t if _descriptor(t, 16) is not None else _dense(t)


def _descs(tensors, blocks):
    return [_descriptor(t, block) for t, block in zip(tensors, blocks, strict=True)]


def launch_delta(out: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    """delta = rowsum(dO * O) as [B * Hq, Sq] fp32, through flash's pointer kernel (any strides)."""
    B, Hq, Sq, D = out.shape
    delta = memory.empty((B * Hq, Sq), dtype=torch.float32, device=out.device)
    block = 32 if backend.interpreting() else 64
    _delta_kernel[(triton.cdiv(Sq, block), B * Hq)](
        out, grad_out, delta, Hq, Sq, *out.stride(), *grad_out.stride(), HEAD_DIM=D, BLOCK_M=block, num_warps=4
    )
    return delta


def _sm_scale(q, scale) -> float:
    return q.shape[-1] ** -0.5 if scale is None else float(scale)


def launch_dkdv(q, k, v, do, lse, delta, dk, dv, *, causal, scale, kernel=None, config=None):
    """The dK/dV pass into ``dk`` and ``dv`` (contiguous): ``kernel`` autotuned over dkdv_config's configs, or
    dkdv_tma_kernel with ``config`` = (BLOCK_M1, BLOCK_N1, num_warps, num_stages) given by hand (GPU sweeps).
    q, k, v and do must take descriptors (``addressable``)."""
    B, Hq, Sq, D = q.shape
    Hkv, Sk = k.shape[1], k.shape[2]
    flags = {"CAUSAL": bool(causal), "HEAD_DIM": D}
    # Placeholder blocks for the autotuned kernel: each config's pre-hook sets its own.
    block_m1, block_n1 = (16, 16) if config is None else config[:2]
    descs = _descs((q, k, v, do, dk, dv), (block_m1, block_n1, block_n1, block_m1, block_n1, block_n1))
    args = (*descs, lse, delta, _sm_scale(q, scale), Hq // Hkv, Sq, Sk)
    if config is None:
        kernel[lambda meta: (triton.cdiv(Sk, meta["BLOCK_N1"]), B * Hkv)](*args, **flags)
        return
    if block_n1 % block_m1:
        raise ValueError(f"BLOCK_N1 {block_n1} must be a multiple of BLOCK_M1 {block_m1} (the causal split needs it)")
    dkdv_tma_kernel[(triton.cdiv(Sk, block_n1), B * Hkv)](
        *args, **flags, BLOCK_M1=block_m1, BLOCK_N1=block_n1, num_warps=config[2], num_stages=config[3]
    )


def launch_dq(q, k, v, do, lse, delta, dq, *, causal, scale, kernel=None, config=None):
    """The dQ pass into ``dq`` (contiguous): ``kernel`` autotuned over dq_config's configs, or dq_tma_kernel with
    ``config`` = (BLOCK_M2, BLOCK_N2, num_warps, num_stages) given by hand (GPU sweeps). q, k, v and do must take
    descriptors (``addressable``)."""
    B, Hq, Sq, D = q.shape
    Hkv, Sk = k.shape[1], k.shape[2]
    flags = {"CAUSAL": bool(causal), "HEAD_DIM": D}
    block_m2, block_n2 = (16, 16) if config is None else config[:2]
    descs = _descs((q, k, v, do, dq), (block_m2, block_n2, block_n2, block_m2, block_m2))
    args = (*descs, lse, delta, _sm_scale(q, scale), Hq // Hkv, Sq, Sk)
    if config is None:
        kernel[lambda meta: (triton.cdiv(Sq, meta["BLOCK_M2"]), B * Hq)](*args, **flags)
        return
    if block_m2 % block_n2:
        raise ValueError(f"BLOCK_M2 {block_m2} must be a multiple of BLOCK_N2 {block_n2} (the causal split needs it)")
    dq_tma_kernel[(triton.cdiv(Sq, block_m2), B * Hq)](
        *args, **flags, BLOCK_M2=block_m2, BLOCK_N2=block_n2, num_warps=config[2], num_stages=config[3]
    )


def flash_tma_backward(inputs, out, grad_out, *, dkdv_kernel=None, dq_kernel=None, dkdv=None, dq=None):
    """dQ, dK, dV of the forward whose base-2 logsumexp is ``inputs["stash"]["lse"]``: delta, then the dK/dV pass,
    then the dQ pass. Each pass is autotuned (``dkdv_kernel``, ``dq_kernel``) or runs a config given by hand
    (``dkdv``, ``dq``: tuples as launch_dkdv and launch_dq take them)."""
    q, k, v = inputs["q"], inputs["k"], inputs["v"]
    causal, scale = inputs["causal"], inputs["scale"]
    lse = inputs["stash"]["lse"]
    delta = launch_delta(out, grad_out)
    q, k, v, do = (addressable(t) for t in (q, k, v, grad_out))
    # Fresh contiguous gradients: aligned, so they always take descriptors.
    dq_out, dk_out, dv_out = (memory.empty(tuple(t.shape), dtype=t.dtype, device=t.device) for t in (q, k, v))
    launch_dkdv(q, k, v, do, lse, delta, dk_out, dv_out, causal=causal, scale=scale, kernel=dkdv_kernel, config=dkdv)
    launch_dq(q, k, v, do, lse, delta, dq_out, causal=causal, scale=scale, kernel=dq_kernel, config=dq)
    return {"q": dq_out, "k": dk_out, "v": dv_out}
