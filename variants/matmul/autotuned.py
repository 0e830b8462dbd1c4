"""matmul, autotuned: grouped launch order for L2 reuse, tile shape and pipelining chosen per (M, N, K) by
benchmarking a few H100-minded configs."""

import triton
import triton.language as tl

from kernels.dtypes import FLOATS
from kernels.registry import register
from kernels.tuning import autotune
from variants.matmul._common import grads_by_matmul, grouped_grid, grouped_tile, load_tile, store_tile


def _config(bm, bn, bk, stages, warps):
    return triton.Config(
        {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_stages=stages, num_warps=warps
    )


# Large tiles keep Hopper's tensor cores fed for 16-bit operands. The first three do not fit fp32 tiles in
# shared memory (the autotuner drops them as out of resources); 128x128x32 and the smaller ones do. 64x64 serves
# problems that big tiles would spread over too few SMs.
CONFIGS = [
    _config(128, 256, 64, 3, 8),
    _config(256, 128, 64, 3, 8),
    _config(128, 128, 64, 4, 8),
    _config(128, 128, 32, 4, 8),
    _config(128, 64, 64, 4, 4),
    _config(64, 64, 32, 4, 4),
]


# kernels.tuning.autotune is triton.autotune on a GPU; under the interpreter it runs each config once, untimed.
@autotune(configs=CONFIGS, key=["M", "N", "K"])
@triton.jit
def _autotuned_kernel(
    a_ptr, b_ptr, c_ptr, M, N, K,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        a = load_tile(a_ptr, rows, ks, M, K, stride_am, stride_ak)
        b = load_tile(b_ptr, ks, cols, K, N, stride_bk, stride_bn)
        acc = tl.dot(a, b, acc)
    store_tile(c_ptr, acc, rows, cols, M, N, stride_cm, stride_cn)


def _backward(inputs, out, grad_out):
    return grads_by_matmul(matmul_autotuned.forward, inputs, grad_out)


@register(op="matmul", name="autotuned", version="1.0.0", dtypes=FLOATS, backward=_backward)
def matmul_autotuned(a, b, *, out):
    """Grouped-order tiled matmul, autotuned over tile shapes and pipeline depth per problem shape."""
    M, K = a.shape
    N = b.shape[1]
    _autotuned_kernel[grouped_grid(M, N)](a, b, out, M, N, K, *a.stride(), *b.stride(), *out.stride())
    return out
