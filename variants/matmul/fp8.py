"""matmul, fp8: e4m3 operands multiplied on the tensor cores into fp32, dequantized by their per-tensor or
per-row scales in the epilogue, written as bf16."""

import torch
import triton
import triton.language as tl

from kernels.registry import register
from variants.matmul._common import grouped_grid, grouped_tile, load_tile, store_tile

BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M = 128, 128, 128, 8
NUM_WARPS, NUM_STAGES = 8, 4
# Hopper's fp8 tensor cores keep only ~14 bits of a running sum. Adding each K tile's product into the fp32
# accumulator on the CUDA cores, as cuBLAS does unless asked for fast accumulation, leaves ~5x fewer elements
# outside the bf16 tolerance at 4096^3 for up to a quarter of the throughput.
MAX_IMPRECISE_ACC = BLOCK_K


@triton.jit
def _fp8_kernel(
    a_ptr, b_ptr, c_ptr, scale_a_ptr, scale_b_ptr, M, N, K,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    ROW_WISE: tl.constexpr, MAX_IMPRECISE_ACC: tl.constexpr,
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
        acc = tl.dot(a, b, acc, max_num_imprecise_acc=MAX_IMPRECISE_ACC)
    # A row scale of a and a column scale of b are constant along K, so they factor out of the sum: dequantize
    # once per output element instead of once per product.
    if ROW_WISE:
        scale_a = tl.load(scale_a_ptr + rows, mask=rows < M, other=0.0)
        scale_b = tl.load(scale_b_ptr + cols, mask=cols < N, other=0.0)
        acc = acc * scale_a[:, None] * scale_b[None, :]
    else:
        acc = acc * (tl.load(scale_a_ptr) * tl.load(scale_b_ptr))
    store_tile(c_ptr, acc, rows, cols, M, N, stride_cm, stride_cn)


@register(
    op="matmul",
    name="fp8",
    version="1.0.0",
    dtypes=(torch.float8_e4m3fn,),
    min_cc=(8, 9),
    modes=("scaled_tensor", "scaled_row"),
    no_backward="fp8 path is inference-only: e4m3 operands carry no gradient",
)
def matmul_fp8(a, b, *, scale_a, scale_b, out):
    """e4m3 x e4m3 into fp32 with the dequantization scales applied in the epilogue; bf16 out."""
    M, K = a.shape
    N = b.shape[1]
    # Scales are contiguous ([1], [1, 1], [M, 1] or [1, N]), so element i of a per-row scale sits at offset i.
    # Either one above size 1 means per-row (a per-row scale over a single row or column has size 1 too).
    _fp8_kernel[grouped_grid(M, N)](
        a, b, out, scale_a, scale_b, M, N, K, *a.stride(), *b.stride(), *out.stride(),
        ROW_WISE=scale_a.dim() == 2, MAX_IMPRECISE_ACC=MAX_IMPRECISE_ACC,
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, GROUP_M=GROUP_M,
        num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )  # fmt: skip
    return out
