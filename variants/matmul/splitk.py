"""matmul, split-K: K divided among SPLIT_K programs per output tile, for problems with too few output tiles
to fill the GPU; the fp32 partial products are summed in a fixed order (splitk) or with atomics (splitk_atomic)."""

import torch
import triton
import triton.language as tl

from kernels import memory
from kernels.dtypes import FLOATS
from kernels.registry import register
from variants.matmul._common import grads_by_matmul, load_tile, store_tile

BLOCK_M, BLOCK_N, BLOCK_K = 64, 64, 32
NUM_WARPS, NUM_STAGES = 4, 4
MIN_K_TILES_PER_SPLIT = 4
MAX_SPLIT_K = 16
# Enough programs for a few waves of the 132 SMs of an H100; past that, more splits only add partial traffic.
TARGET_PROGRAMS = 4 * 132
SUM_BLOCK = 1024


@triton.jit
def _partial_kernel(
    a_ptr, b_ptr, c_ptr, M, N, K, K_PER_SPLIT,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cs, stride_cm, stride_cn,
    ATOMIC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    pid_k = tl.program_id(2)
    # K_PER_SPLIT is a whole number of K tiles, so no tile straddles two splits and `< K` is the only K mask.
    k_start = pid_k * K_PER_SPLIT
    k_end = tl.minimum(k_start + K_PER_SPLIT, K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        a = load_tile(a_ptr, rows, ks, M, K, stride_am, stride_ak)
        b = load_tile(b_ptr, ks, cols, K, N, stride_bk, stride_bn)
        acc = tl.dot(a, b, acc)
    if ATOMIC:
        mask = (rows[:, None] < M) & (cols[None, :] < N)
        ptrs = c_ptr + rows[:, None] * stride_cm + cols[None, :] * stride_cn
        # Only the sum matters, not when other programs see it: relaxed ordering is enough.
        tl.atomic_add(ptrs, acc, mask=mask, sem="relaxed")
    else:
        # [SPLIT_K, M, N] scratch can pass 2**31 elements even when M * N does not: offset the slice in int64.
        c_ptr += pid_k.to(tl.int64) * stride_cs
        store_tile(c_ptr, acc, rows, cols, M, N, stride_cm, stride_cn)


@triton.jit
def _sum_splits_kernel(partial_ptr, out_ptr, n, SPLIT_K, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    # Always slice 0 first, then 1, ...: the same rounding on every run, which is what makes splitk deterministic.
    for _ in range(SPLIT_K):
        acc += tl.load(partial_ptr + offsets, mask=mask, other=0.0)
        partial_ptr += n
    tl.store(out_ptr + offsets, acc.to(out_ptr.dtype.element_ty), mask=mask)


def _split(M, N, K):
    """(SPLIT_K, K per split): at least MIN_K_TILES_PER_SPLIT K tiles each, no more programs than needed."""
    k_tiles = triton.cdiv(K, BLOCK_K)
    tiles = triton.cdiv(M, BLOCK_M) * triton.cdiv(N, BLOCK_N)
    split = max(1, min(MAX_SPLIT_K, k_tiles // MIN_K_TILES_PER_SPLIT, triton.cdiv(TARGET_PROGRAMS, tiles)))
    tiles_per_split = triton.cdiv(k_tiles, split)
    # Rounding tiles_per_split up can leave the last splits with nothing to do; drop them.
    return triton.cdiv(k_tiles, tiles_per_split), tiles_per_split * BLOCK_K


def _launch(a, b, out, atomic):
    M, K = a.shape
    N = b.shape[1]
    split, k_per_split = _split(M, N, K)
    grid = (triton.cdiv(M, BLOCK_M), triton.cdiv(N, BLOCK_N), split)
    meta = dict(BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, num_warps=NUM_WARPS, num_stages=NUM_STAGES)
    if split == 1:
        # One split covers all of K: store straight into out, as a plain tiled matmul would.
        _partial_kernel[grid](
            a, b, out, M, N, K, k_per_split, *a.stride(), *b.stride(), 0, *out.stride(), ATOMIC=False, **meta
        )
        return out
    if atomic:
        # Atomic adds accumulate onto what the buffer already holds, so it must start at zero. This is the one
        # buffer not taken from memory.empty: poisoning it with NaN would poison the sum itself.
        partials = torch.zeros((1, M, N), dtype=torch.float32, device=out.device)
    else:
        partials = memory.empty((split, M, N), dtype=torch.float32, device=out.device)
    _partial_kernel[grid](a, b, partials, M, N, K, k_per_split, *a.stride(), *b.stride(), *partials.stride(),
                          ATOMIC=atomic, **meta)  # fmt: skip
    # With atomics the splits already met in the one slice, and summing one slice is the cast to out's dtype.
    _sum_splits_kernel[(triton.cdiv(M * N, SUM_BLOCK),)](partials, out, M * N, partials.shape[0], BLOCK=SUM_BLOCK)
    return out


def _backward(inputs, out, grad_out):
    return grads_by_matmul(matmul_splitk.forward, inputs, grad_out)


def _backward_atomic(inputs, out, grad_out):
    return grads_by_matmul(matmul_splitk_atomic.forward, inputs, grad_out)


@register(op="matmul", name="splitk", version="1.0.0", dtypes=FLOATS, backward=_backward)
def matmul_splitk(a, b, *, out):
    """Split-K matmul; each split writes an fp32 partial and a second kernel sums them in a fixed order."""
    return _launch(a, b, out, atomic=False)


@register(
    op="matmul", name="splitk_atomic", version="1.0.0", dtypes=FLOATS, deterministic=False, backward=_backward_atomic
)
def matmul_splitk_atomic(a, b, *, out):
    """Split-K matmul; splits atomically add fp32 partials into one buffer (summation order varies run to run)."""
    return _launch(a, b, out, atomic=True)
