"""The FlashAttention forward of flash_hopper: _flash.py's online softmax, with Q, K and V read and O written
through TMA tensor descriptors.

On Hopper a descriptor load is one TMA instruction per tile, issued by one thread, that lands the tile in shared
memory in the layout the wgmma instructions read: the inner loop keeps no per-element pointers or masks in
registers, and no address arithmetic competes with the exponentials for issue slots.

Each descriptor is built on the host over a 3-D view [B * H, S, D] of its tensor, with a block of [1, BLOCK, D].
TMA checks every dimension against its own bound: a tile that runs past S reads zeros (and a store past S is
clipped) instead of reaching into the next head's rows, so a ragged end needs no pointer mask. Only the scores
of key columns past Sk and on the causal diagonal are masked, in the tiles that hold them (see _flash.py).

The softmax folds the scale into the exponential, as FlashAttention-3 does for Hopper where exp2 throughput is
the bottleneck: the raw row maximum is scaled once per row (``m = max(m, rowmax(s) * qk_scale)``) and each
probability is one fused multiply-add before its exp2 (``p = exp2(s * qk_scale - m)``), instead of a multiply
over the whole score tile and then a subtraction. That needs qk_scale > 0 (a negative scale turns the row maximum
into the minimum, and -inf * 0 is NaN); launch_forward sends a scale <= 0 to _flash.py's pointer kernel.

The kernel stores the same base-2 logsumexp as _flash.flash_forward_kernel ([B * Hq, Sq] fp32), so flash's
backward runs on it unchanged, and so does flash_hopper's own (_flash_tma_bwd.py), which reuses the descriptors
built here.

TMA asks for a 16-byte aligned base, 16-byte aligned strides and a contiguous last dimension. A tensor whose
(batch, head) dimensions cannot be merged into one or that breaks those rules (a [B, S, H, D] tensor read through
``.transpose(1, 2)``, a sliced head_dim) is copied into a contiguous buffer first: one pass over it, against the
2 * Sq * Sk * D multiply-adds per head the kernel then does. An output that cannot take a descriptor is written
through a contiguous buffer and copied back.

An underscore module: it registers nothing.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from kernels import backend, memory
from variants.attention import _flash


@triton.jit
def _attend_tiles(
    acc, l_i, m_i, q, k_desc, v_desc, kv_row, rows, lo, hi, seq_k, qk_scale,
    MASKED: tl.constexpr, CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        # K rows past Sk arrive as zeros (TMA's bound on the sequence dimension); their scores are masked below.
        k = tl.reshape(k_desc.load([kv_row, start_n, 0]), (BLOCK_N, HEAD_DIM))
        s = tl.dot(q, tl.trans(k))
        if MASKED:
            cols = start_n + tl.arange(0, BLOCK_N)
            visible = cols[None, :] < seq_k
            if CAUSAL:
                visible = visible & (cols[None, :] <= rows[:, None])
            s = tl.where(visible, s, float("-inf"))
        # qk_scale > 0, so the maximum of the scaled row is the scaled maximum of the raw one. Every row sees a key
        # in the first tile it visits, so m_i is finite from then on and a masked score gives exp2(-inf) = 0.
        m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
        p = tl.math.exp2(s * qk_scale - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.reshape(v_desc.load([kv_row, start_n, 0]), (BLOCK_N, HEAD_DIM))
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def flash_tma_forward_kernel(
    q_desc, k_desc, v_desc, o_desc, lse_ptr, sm_scale, group, seq_q, seq_k,
    CAUSAL: tl.constexpr, STORE_LSE: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    # The descriptors' blocks are [1, BLOCK_M, HEAD_DIM] (q, o) and [1, BLOCK_N, HEAD_DIM] (k, v): the launcher
    # (or the autotuner's pre-hook) sets them to this launch's tiles.
    # With a causal mask the last query tiles do the most work: launch them first, so the short ones fill the tail
    # of the grid instead of leaving SMs idle behind a long one.
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0) if CAUSAL else tl.program_id(0)
    start_m = pid_m * BLOCK_M
    # bh = batch * Hq + head indexes the [B * Hq, Sq, D] views. Grouped-query attention: `group` consecutive query
    # heads read one key/value head, and batch * Hkv + head // group is exactly bh // group.
    bh = tl.program_id(1)
    kv_row = bh // group
    rows = start_m + tl.arange(0, BLOCK_M)
    # Query rows past Sq load as zeros: finite scores, and their output rows are clipped by the store.
    q = tl.reshape(q_desc.load([bh, start_m, 0]), (BLOCK_M, HEAD_DIM))

    qk_scale = sm_scale * 1.4426950408889634
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, HEAD_DIM), dtype=tl.float32)

    lo, hi = _flash.key_ranges(start_m, seq_k, CAUSAL, BLOCK_M, BLOCK_N)
    acc, l_i, m_i = _attend_tiles(
        acc, l_i, m_i, q, k_desc, v_desc, kv_row, rows, 0, lo, seq_k, qk_scale,
        MASKED=False, CAUSAL=CAUSAL, HEAD_DIM=HEAD_DIM, BLOCK_N=BLOCK_N,
    )  # fmt: skip
    acc, l_i, m_i = _attend_tiles(
        acc, l_i, m_i, q, k_desc, v_desc, kv_row, rows, lo, hi, seq_k, qk_scale,
        MASKED=True, CAUSAL=CAUSAL, HEAD_DIM=HEAD_DIM, BLOCK_N=BLOCK_N,
    )  # fmt: skip

    acc = acc / l_i[:, None]
    # The output has q's dtype (fp16 or bf16). TMA clips the rows of this tile that lie past Sq.
    o_desc.store([bh, start_m, 0], tl.reshape(acc.to(q.dtype), (1, BLOCK_M, HEAD_DIM)))
    if STORE_LSE:
        # Base-2 logsumexp of the scaled scores: the backward rebuilds P = exp2(s * qk_scale - lse) from it.
        tl.store(lse_ptr + bh.to(tl.int64) * seq_q + rows, m_i + tl.math.log2(l_i), mask=rows < seq_q)


# -- descriptors ------------------------------------------------------------------------------------------------
def _descriptor(t: torch.Tensor, block_rows: int) -> TensorDescriptor | None:
    """A descriptor over ``t`` [B, H, S, D] seen as [B * H, S, D] with blocks [1, block_rows, D], or None when
    TMA cannot take that view (the (batch, head) dimensions do not merge, or a stride or the base is not 16-byte
    aligned)."""
    B, H, S, D = t.shape
    try:
        rows = t.view(B * H, S, D)
    except RuntimeError:
        return None
    # The stride of a dimension of size 1 is never stepped along, and torch leaves it arbitrary (is_contiguous
    # ignores it): give it the contiguous value, so that it cannot fail the alignment rule below.
    dense = (S * D, D, 1)
    strides = [st if size > 1 else d for size, st, d in zip(rows.shape, rows.stride(), dense, strict=True)]
    aligned = rows.data_ptr() % 16 == 0 and all(s * t.element_size() % 16 == 0 for s in strides[:-1])
    if strides[-1] != 1 or not aligned:
        return None
    return TensorDescriptor(rows, [B * H, S, D], strides, [1, block_rows, D])


def _dense(t: torch.Tensor) -> torch.Tensor:
    """A fresh contiguous copy: a new allocation, so its base and strides are aligned whatever ``t``'s were."""
    return memory.empty(tuple(t.shape), dtype=t.dtype, device=t.device).copy_(t)


def _descriptors(q, k, v, out, block_m: int, block_n: int):
    """(q, k, v, o descriptors, o_buffer): o_buffer is the tensor the kernel writes, ``out`` itself unless ``out``
    cannot take a descriptor."""
    descs = []
    for t, block in ((q, block_m), (k, block_n), (v, block_n)):
        desc = _descriptor(t, block)
        descs.append(desc if desc is not None else _descriptor(_dense(t), block))
    o_buffer = out
    o_desc = _descriptor(out, block_m)
    if o_desc is None:
        o_buffer = memory.empty(tuple(out.shape), dtype=out.dtype, device=out.device)
        o_desc = _descriptor(o_buffer, block_m)
    return (*descs, o_desc, o_buffer)


def _fit_blocks(nargs: dict) -> None:
    """Autotuner pre-hook: give the descriptors the block shapes of the config about to run. The blocks are part
    of each descriptor's type, so each config compiles its own kernel."""
    for name, tile in (("q_desc", "BLOCK_M"), ("o_desc", "BLOCK_M"), ("k_desc", "BLOCK_N"), ("v_desc", "BLOCK_N")):
        desc = nargs[name]
        desc.block_shape = [1, nargs[tile], desc.block_shape[-1]]


# -- configs ----------------------------------------------------------------------------------------------------
def config(block_m: int, block_n: int, warps: int, stages: int) -> triton.Config:
    return triton.Config(
        {"BLOCK_M": block_m, "BLOCK_N": block_n}, num_warps=warps, num_stages=stages, pre_hook=_fit_blocks
    )


# Hopper: 128 query rows per program (two warpgroups of 64 wgmma rows at 8 warps), key tiles of 64 or 128, and
# 2 to 4 stages of K/V tiles in flight. At head_dim 128 a stage of 128-key bf16 K and V tiles is 64 KiB: three of
# them and Q fit in the 227 KiB a block may use (225 KiB as Triton 3.6 lays them out), four do not, and the
# autotuner drops a config that does not fit as out of resources.
CONFIGS = [config(128, block_n, warps, stages) for block_n in (64, 128) for warps in (4, 8) for stages in (2, 3, 4)]
# Under the interpreter a config is run, not timed: one with small tiles, which still takes several steps over the
# odd CPU test lengths (and keeps BLOCK_M != BLOCK_N, so the causal diagonal spans two key tiles).
INTERPRETER_CONFIG = config(32, 16, 4, 1)


def prune(configs, named_args, **kwargs):
    """``early_config_prune`` for an autotuner over CONFIGS: the causal split of the key loop needs BLOCK_M to be a
    multiple of BLOCK_N; the interpreter runs INTERPRETER_CONFIG alone.

    4-warp configs stay although at head_dim 128 ptxas spills them (a 128 x 128 fp32 accumulator is 128 registers
    a thread over 4 warps): on an H200 (torch 2.11, Triton 3.6, 2026-11-28) 128 x 64 over 4 warps and 2 stages was
    the fastest of all twelve at B4 H32 S4096 D128 bf16, 2.109 ms without a mask and 1.167 ms causal, against
    2.118 and 1.252 ms for the best 8-warp config (docs/performance.md)."""
    if backend.interpreting():
        return [INTERPRETER_CONFIG]
    return [c for c in configs if c.kwargs["BLOCK_M"] % c.kwargs["BLOCK_N"] == 0]


# -- launchers --------------------------------------------------------------------------------------------------
def _launch(q, k, v, out, causal, scale, lse, block_m, block_n, run):
    """Build the descriptors (blocks [1, block_m, D] and [1, block_n, D]) and the arguments, and hand them to
    ``run(B * Hq, *args, **flags)``, which launches; copy the result back into ``out`` if it went through a
    buffer."""
    B, Hq, Sq, D = q.shape
    Hkv, Sk = k.shape[1], k.shape[2]
    sm_scale = D**-0.5 if scale is None else float(scale)
    q_desc, k_desc, v_desc, o_desc, o_buffer = _descriptors(q, k, v, out, block_m, block_n)
    args = (q_desc, k_desc, v_desc, o_desc, lse, sm_scale, Hq // Hkv, Sq, Sk)
    flags = {"CAUSAL": bool(causal), "STORE_LSE": lse is not None, "HEAD_DIM": D}
    run(B * Hq, *args, **flags)
    if o_buffer is not out:
        out.copy_(o_buffer)
    return out


def positive_scale(q, scale) -> bool:
    return (q.shape[-1] ** -0.5 if scale is None else float(scale)) > 0


def launch_forward(q, k, v, out, *, causal, scale, kernel, lse=None):
    """``kernel`` (flash_tma_forward_kernel autotuned over configs made by ``config``) over q, k, v [B, H, S, D]
    of any strides into ``out``; with ``lse`` ([B * Hq, Sq] fp32) it also stores the base-2 logsumexp of each row.
    A scale <= 0 runs _flash's pointer kernel instead (see the module docstring)."""
    if not positive_scale(q, scale):
        return _flash.launch_forward(q, k, v, out, causal=causal, scale=scale, lse=lse)
    Sq = q.shape[2]

    def run(heads, *args, **flags):
        kernel[lambda meta: (triton.cdiv(Sq, meta["BLOCK_M"]), heads)](*args, **flags)

    # Placeholder blocks: the config's pre-hook gives the descriptors the config's own before each launch.
    return _launch(q, k, v, out, causal, scale, lse, 16, 16, run)


def launch_forward_config(q, k, v, out, *, causal, scale, block_m, block_n, num_warps, num_stages, lse=None):
    """flash_tma_forward_kernel with one config given by hand, for GPU sweeps: no autotuning, and a scale <= 0 is
    refused rather than sent to the pointer kernel (layouts TMA cannot address are still copied)."""
    if block_m % block_n != 0:
        raise ValueError(f"BLOCK_M {block_m} must be a multiple of BLOCK_N {block_n} (the causal split needs it)")
    if not positive_scale(q, scale):
        raise ValueError(f"the folded-scale softmax needs a positive scale, got {scale}")
    Sq = q.shape[2]

    def run(heads, *args, **flags):
        flash_tma_forward_kernel[(triton.cdiv(Sq, block_m), heads)](
            *args, **flags, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=num_warps, num_stages=num_stages
        )

    return _launch(q, k, v, out, causal, scale, lse, block_m, block_n, run)
