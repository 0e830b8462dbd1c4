"""matmul, naive: one program per output tile on a 2-D grid, looping over K one tile at a time."""

import triton
import triton.language as tl

from kernels.dtypes import FLOATS
from kernels.registry import register
from variants.matmul._common import grads_by_matmul, load_tile, store_tile

BLOCK_M, BLOCK_N, BLOCK_K = 64, 64, 32


@triton.jit
def _naive_kernel(
    a_ptr, b_ptr, c_ptr, M, N, K,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        a = load_tile(a_ptr, rows, ks, M, K, stride_am, stride_ak)
        b = load_tile(b_ptr, ks, cols, K, N, stride_bk, stride_bn)
        acc = tl.dot(a, b, acc)
    store_tile(c_ptr, acc, rows, cols, M, N, stride_cm, stride_cn)


def _backward(inputs, out, grad_out):
    return grads_by_matmul(matmul_naive.forward, inputs, grad_out)


@register(op="matmul", name="naive", version="1.0.0", dtypes=FLOATS, backward=_backward)
def matmul_naive(a, b, *, out):
    """Plain tiled matmul: a 2-D grid of output tiles, fp32 accumulation over K tiles."""
    M, K = a.shape
    N = b.shape[1]
    grid = (triton.cdiv(M, BLOCK_M), triton.cdiv(N, BLOCK_N))
    _naive_kernel[grid](
        a, b, out, M, N, K, *a.stride(), *b.stride(), *out.stride(),
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K,
    )  # fmt: skip
    return out
