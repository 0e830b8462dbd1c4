"""Pieces the lora_linear variants share: a plain tiled GEMM with an fp32 left operand and an addend, the rank
padding, and the backward, which differs between variants only in how it forms dx.

An underscore module: it registers nothing.
"""

import torch
import triton
import triton.language as tl

from kernels import memory
from variants.matmul._common import load_tile, store_tile

# Blocks of the plain GEMM, as matmul's naive variant uses.
BLOCK_M, BLOCK_N, BLOCK_K = 64, 64, 32
# The low-rank GEMMs stream a long dimension (K, or M in the backward) into a rank-wide tile: deeper steps.
LOWRANK_BLOCK_K = 64
# A rank dimension in one tile up to this size; a larger rank is tiled like any other dimension.
MAX_RANK_TILE = 64


def rank_block(rank: int) -> int:
    """The rank padded to a power of two of at least 16, the smallest a tl.dot dimension may be."""
    return max(16, triton.next_power_of_2(rank))


@triton.jit
def dot_split_lhs(lhs, rhs, acc, SPLIT: tl.constexpr):
    """``acc + lhs @ rhs``. With SPLIT, ``lhs`` is fp32 (a low-rank product kept in fp32) and ``rhs`` 16-bit:
    rounding ``lhs`` to rhs's dtype would put a 16-bit error into every element of the result; split into hi + lo,
    two values of that dtype, it keeps about twice the mantissa through two 16-bit dots."""
    if SPLIT:
        hi = lhs.to(rhs.dtype)
        acc = tl.dot(hi, rhs, acc)
        lhs = (lhs - hi.to(tl.float32)).to(rhs.dtype)
    return tl.dot(lhs, rhs, acc)


@triton.jit
def _gemm_kernel(
    a_ptr, b_ptr, addend_ptr, out_ptr, M, N, K, alpha,
    stride_am, stride_ak, stride_bk, stride_bn, stride_addm, stride_addn, stride_om, stride_on,
    HAS_ADDEND: tl.constexpr, SPLIT_A: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        a = load_tile(a_ptr, rows, ks, M, K, stride_am, stride_ak)
        b = load_tile(b_ptr, ks, cols, K, N, stride_bk, stride_bn)
        acc = dot_split_lhs(a, b, acc, SPLIT_A)
    acc = acc * alpha
    if HAS_ADDEND:
        # The addend is an fp32 partial result: the sum is rounded once, at the store.
        acc += load_tile(addend_ptr, rows, cols, M, N, stride_addm, stride_addn).to(tl.float32)
    store_tile(out_ptr, acc, rows, cols, M, N, stride_om, stride_on)


def gemm(a, b, out, *, alpha=1.0, addend=None, block_m=BLOCK_M, block_n=BLOCK_N, block_k=BLOCK_K):
    """``out = alpha * (a @ b) + addend`` for ``a[M, K]``, ``b[K, N]`` and ``out``/``addend[M, N]`` of any
    strides, accumulated in fp32. An fp32 ``a`` with a 16-bit ``b`` is split by ``dot_split_lhs``."""
    M, K = a.shape
    N = b.shape[1]
    has_addend = addend is not None
    grid = (triton.cdiv(M, block_m), triton.cdiv(N, block_n))
    _gemm_kernel[grid](
        a, b, addend, out, M, N, K, float(alpha),
        *a.stride(), *b.stride(), *(addend.stride() if has_addend else (0, 0)), *out.stride(),
        HAS_ADDEND=has_addend, SPLIT_A=a.dtype == torch.float32 and b.dtype != torch.float32,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=4,
    )  # fmt: skip
    return out


def lowrank(a, b, out, *, rank_dim, alpha=1.0):
    """``out = alpha * (a @ b)`` where out's dimension ``rank_dim`` is the adapter's rank: that one in a single
    tile (up to MAX_RANK_TILE), the long inner dimension in deep steps."""
    rank_tile = min(rank_block(out.shape[rank_dim]), MAX_RANK_TILE)
    return gemm(
        a, b, out, alpha=alpha,
        block_m=rank_tile if rank_dim == 0 else BLOCK_M,
        block_n=rank_tile if rank_dim == 1 else BLOCK_N,
        block_k=LOWRANK_BLOCK_K,
    )  # fmt: skip


def lora_backward(inputs, grad_out, dx_into):
    """The gradients of ``y = x @ w.T + scale * (x @ a.T) @ b.T`` for x, a and b (w is frozen):

        t = dy @ b,  dx = dy @ w + scale * t @ a,  da = scale * t.T @ x,  db = scale * dy.T @ (x @ a.T)

    t and x @ a.T stay in fp32 scratch, so da and db round once. ``dx_into(dy, w, b, a, t, scale, dx)`` forms dx,
    the one large GEMM, the variant's own way."""
    x, w, a, b, scale = inputs["x"], inputs["w"], inputs["a"], inputs["b"], inputs["scale"]
    dy = grad_out
    M, rank = x.shape[0], a.shape[0]
    t = lowrank(dy, b, memory.empty((M, rank), dtype=torch.float32, device=x.device), rank_dim=1)
    xa = lowrank(x, a.t(), memory.empty((M, rank), dtype=torch.float32, device=x.device), rank_dim=1)
    dx = dx_into(dy, w, b, a, t, scale, memory.empty(x.shape, dtype=x.dtype, device=x.device))
    da = lowrank(t.t(), x, memory.empty(a.shape, dtype=a.dtype, device=a.device), rank_dim=0, alpha=scale)
    db = memory.empty(b.shape, dtype=b.dtype, device=b.device)
    # db.T = scale * (x @ a.T).T @ dy: the rank is db's column dimension, written through the transposed view.
    lowrank(xa.t(), dy, db.t(), rank_dim=0, alpha=scale)
    return {"x": dx, "a": da, "b": db}
