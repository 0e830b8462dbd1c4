"""int8_matmul, split-K: for small M (decode), where [M, N] has too few output tiles to keep every SM streaming
weight, K is divided among SPLIT_K programs per tile. Each dequantizes its int8 tiles on the fly and writes an fp32
partial, already scaled; a second kernel sums the partials in a fixed order, so the result is deterministic."""

import torch
import triton
import triton.language as tl

from kernels import memory
from kernels.dtypes import FLOATS
from kernels.registry import register
from variants.int8_matmul._common import dx_dequant_on_the_fly, int8_dot, scale_columns
from variants.matmul._common import store_tile

# matmul's split-K reduction: the same fixed-order sum of fp32 partials makes this variant deterministic too.
from variants.matmul.splitk import _sum_splits_kernel

BLOCK_N, BLOCK_K = 64, 64
NUM_WARPS, NUM_STAGES = 4, 4
MAX_SPLIT_K = 16
# A few programs per SM of an H100 (132): enough weight loads in flight to cover the memory latency.
TARGET_PROGRAMS = 4 * 132
SUM_BLOCK = 1024


def _block_m(M: int) -> int:
    # Rows of x per tile: as few as the dot allows (16) for decode, so no tensor-core work is spent on padding.
    return min(64, max(16, triton.next_power_of_2(M)))


@triton.jit
def _partial_kernel(
    x_ptr, w_ptr, scale_ptr, c_ptr, M, N, K, K_PER_SPLIT,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_s, stride_cs, stride_cm, stride_cn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    pid_k = tl.program_id(2)
    # K_PER_SPLIT is a whole number of K tiles, so no tile straddles two splits and `< K` is the only K mask.
    k_start = pid_k * K_PER_SPLIT
    k_end = tl.minimum(k_start + K_PER_SPLIT, K)
    acc = int8_dot(x_ptr, w_ptr, rows, cols, k_start, k_end, M, N, K, stride_xm, stride_xk, stride_wn, stride_wk,
                   BLOCK_M, BLOCK_N, BLOCK_K)  # fmt: skip
    # Scaling each partial is exact math: the scale of column n multiplies every split's sum alike.
    acc = scale_columns(acc, scale_ptr, cols, N, stride_s)
    # [SPLIT_K, M, N] scratch can pass 2**31 elements even when M * N does not: offset the slice in int64.
    c_ptr += pid_k.to(tl.int64) * stride_cs
    store_tile(c_ptr, acc, rows, cols, M, N, stride_cm, stride_cn)


def split_of(M: int, N: int, K: int) -> tuple[int, int]:
    """(SPLIT_K, K per split): splits of at least one K tile, no more programs than TARGET_PROGRAMS needs."""
    k_tiles = triton.cdiv(K, BLOCK_K)
    tiles = triton.cdiv(M, _block_m(M)) * triton.cdiv(N, BLOCK_N)
    split = max(1, min(MAX_SPLIT_K, k_tiles, triton.cdiv(TARGET_PROGRAMS, tiles)))
    tiles_per_split = triton.cdiv(k_tiles, split)
    # Rounding tiles_per_split up can leave the last splits with nothing to do; drop them.
    return triton.cdiv(k_tiles, tiles_per_split), tiles_per_split * BLOCK_K


@register(op="int8_matmul", name="splitk", version="1.0.0", dtypes=FLOATS, backward=dx_dequant_on_the_fly)
def int8_matmul_splitk(x, w, scale, *, out):
    """K split across programs for small M; fp32 partials summed in a fixed order by a second kernel."""
    M, K = x.shape
    N = w.shape[0]
    block_m = _block_m(M)
    split, k_per_split = split_of(M, N, K)
    grid = (triton.cdiv(M, block_m), triton.cdiv(N, BLOCK_N), split)
    meta = dict(BLOCK_M=block_m, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, num_warps=NUM_WARPS, num_stages=NUM_STAGES)
    if split == 1:
        # One split covers all of K: store straight into out, as a plain tiled kernel would.
        _partial_kernel[grid](x, w, scale, out, M, N, K, k_per_split, *x.stride(), *w.stride(), scale.stride(0),
                              0, *out.stride(), **meta)  # fmt: skip
        return out
    partials = memory.empty((split, M, N), dtype=torch.float32, device=out.device)
    _partial_kernel[grid](x, w, scale, partials, M, N, K, k_per_split, *x.stride(), *w.stride(), scale.stride(0),
                          *partials.stride(), **meta)  # fmt: skip
    # out is contiguous (the entry point checks), so it and each partial slice share one flat index.
    # matmul's split-K reduction: its fixed-order sum of fp32 partials makes this variant deterministic too.
    _sum_splits_kernel[(triton.cdiv(M * N, SUM_BLOCK),)](partials, out, M * N, split, BLOCK=SUM_BLOCK)
    return out
