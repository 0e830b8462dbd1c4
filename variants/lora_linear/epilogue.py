"""lora_linear, epilogue: the down projection first, as its own light launch, then the base GEMM with the up
projection as its epilogue.

``xa = x @ a.T`` is [tokens, rank] in fp32: one read of x, memory-bound, a few percent of the base GEMM's time.
The main kernel is then matmul's autotuned loop over K unchanged, so it pipelines like a plain GEMM, and its
epilogue adds ``scale * xa[rows] @ b.T[:, cols]``, one rank-deep dot per output tile, before the single store.

Why beside ``fused``: fused feeds each x tile to two dots inside the K loop, the base tile and a rank-wide one.
On an H200 (torch 2.11, Triton 3.6, 2026-11-28) it ran at 466 TFLOP/s, 0.73x the three cuBLAS calls, where
matmul's autotuned loop alone reaches about 0.89x cuBLAS. This variant pays one extra read of x to keep that loop
as it is. The backward's dx = dy @ w + scale * t @ a has the same shape, with t = dy @ b already in fp32 scratch
(variants/lora_linear/_common.py), and runs the same kernel."""

import torch
import triton
import triton.language as tl

from kernels import memory
from kernels.dtypes import FLOATS
from kernels.registry import register
from kernels.tuning import autotune
from variants.lora_linear._common import dot_split_lhs, lora_backward, lowrank, rank_block
from variants.lora_linear.fused import CONFIGS, MAX_RANK, _interpreter_keeps_one, k_major
from variants.matmul._common import grouped_grid, grouped_tile, load_tile, store_tile


@autotune(configs=CONFIGS, key=["M", "N", "K", "R"], prune_configs_by={"early_config_prune": _interpreter_keeps_one})
@triton.jit
def _epilogue_kernel(
    lhs_ptr, rhs_ptr, low_ptr, up_ptr, out_ptr, M, N, K, R, scale,
    stride_lm, stride_lk, stride_rk, stride_rn, stride_wm, stride_wr, stride_ur, stride_un, stride_om, stride_on,
    SPLIT: tl.constexpr, BLOCK_R: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    # out = lhs @ rhs + scale * low @ up: in the forward lhs = x, rhs = w.T, low = x @ a.T (fp32) and up = b.T.
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        acc = tl.dot(
            load_tile(lhs_ptr, rows, ks, M, K, stride_lm, stride_lk),
            load_tile(rhs_ptr, ks, cols, K, N, stride_rk, stride_rn),
            acc,
        )
    # Rank columns past R load as zeros on both sides, so the padding adds nothing.
    ranks = tl.arange(0, BLOCK_R)
    low = load_tile(low_ptr, rows, ranks, M, R, stride_wm, stride_wr)
    up = load_tile(up_ptr, ranks, cols, R, N, stride_ur, stride_un)
    # low stays fp32 until here; split into two 16-bit halves it keeps its precision through the 16-bit dots.
    acc = dot_split_lhs(low * scale, up, acc, SPLIT)
    store_tile(out_ptr, acc, rows, cols, M, N, stride_om, stride_on)


def _launch(lhs, rhs, low, up, out, scale):
    """``out = lhs @ rhs + scale * low @ up`` with ``low`` [M, R] fp32."""
    M, K = lhs.shape
    N, R = rhs.shape[1], low.shape[1]
    # The up operand is read along its rank dimension, the epilogue dot's reduction: keep it contiguous there, for
    # the Triton 3.6 Hopper code generation fault that fused.k_major describes.
    up = k_major(up)
    _epilogue_kernel[grouped_grid(M, N)](
        lhs, rhs, low, up, out, M, N, K, R, float(scale),
        *lhs.stride(), *rhs.stride(), *low.stride(), *up.stride(), *out.stride(),
        SPLIT=up.dtype != torch.float32, BLOCK_R=rank_block(R),
    )  # fmt: skip
    return out


def _dx(dy, w, b, a, t, scale, dx):
    # dx = dy @ w + scale * t @ a, with t = dy @ b already formed in fp32 by lora_backward.
    return _launch(dy, w, t, a, dx, scale)


def _backward(inputs, out, grad_out):
    return lora_backward(inputs, grad_out, _dx)


@register(
    op="lora_linear",
    name="epilogue",
    version="1.0.0",
    dtypes=FLOATS,
    limits={"rank": (1, MAX_RANK)},
    backward=_backward,
)
def lora_linear_epilogue(x, w, a, b, scale, *, out):
    """The down projection x @ a.T in fp32 first, then the base GEMM with scale * (x @ a.T) @ b.T as its epilogue."""
    xa = lowrank(x, a.t(), memory.empty((x.shape[0], a.shape[0]), dtype=torch.float32, device=x.device), rank_dim=1)
    return _launch(x, w.t(), xa, b.t(), out, scale)
