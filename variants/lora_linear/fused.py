"""lora_linear, fused: one kernel. Each program loads a tile of x once per K step and feeds it to two dots, the
base tile x @ w.T [BLOCK_M, BLOCK_N] and the down projection x @ a.T [BLOCK_M, rank padded to >= 16]; the epilogue
adds (scale * x @ a.T) @ b.T to the base in fp32 and stores the result once. Neither intermediate reaches memory.

The price: every N tile recomputes its rows' x @ a.T, rank / BLOCK_N more tensor-core work than the base GEMM
(6% at rank 16 with 256-wide tiles, 12.5% with 128-wide ones). The backward's dx = dy @ w + scale * (dy @ b) @ a
has the same shape, and runs this kernel on (dy, w, b, a)."""

import torch
import triton
import triton.language as tl

from kernels import backend
from kernels.dtypes import FLOATS
from kernels.registry import register
from kernels.tuning import autotune
from variants.lora_linear._common import dot_split_lhs, lora_backward, rank_block
from variants.matmul._common import grouped_grid, grouped_tile, load_tile, store_tile

MAX_RANK = 128


def _config(bm, bn, bk, stages, warps):
    return triton.Config(
        {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_stages=stages, num_warps=warps
    )


# matmul's autotuned configs: wide tiles for 16-bit operands on Hopper (the widest also halve the recomputed
# x @ a.T), smaller ones for fp32 tiles, large ranks and problems too small to fill the SMs. Configs that do not
# fit shared memory or registers are dropped by the autotuner as out of resources.
CONFIGS = [
    _config(128, 256, 64, 3, 8),
    _config(256, 128, 64, 3, 8),
    _config(128, 128, 64, 4, 8),
    _config(128, 128, 32, 4, 8),
    _config(128, 64, 64, 4, 4),
    _config(64, 64, 32, 4, 4),
]


def _interpreter_keeps_one(configs, named_args, **kwargs):
    # Under the interpreter a config is run, not timed: one small config is enough to test the kernel's code.
    return configs[-1:] if backend.interpreting() else configs


@autotune(configs=CONFIGS, key=["M", "N", "K", "R"], prune_configs_by={"early_config_prune": _interpreter_keeps_one})
@triton.jit
def _fused_kernel(
    lhs_ptr, rhs_ptr, down_ptr, up_ptr, out_ptr, M, N, K, R, scale,
    stride_lm, stride_lk, stride_rk, stride_rn, stride_dk, stride_dr, stride_ur, stride_un, stride_om, stride_on,
    SPLIT: tl.constexpr, BLOCK_R: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    # out = lhs @ rhs + scale * (lhs @ down) @ up: in the forward lhs = x, rhs = w.T, down = a.T and up = b.T.
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ranks = tl.arange(0, BLOCK_R)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    down = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        lhs = load_tile(lhs_ptr, rows, ks, M, K, stride_lm, stride_lk)
        acc = tl.dot(lhs, load_tile(rhs_ptr, ks, cols, K, N, stride_rk, stride_rn), acc)
        # Rank columns past R load as zeros, so the padded part of `down` stays 0 and adds nothing below.
        down = tl.dot(lhs, load_tile(down_ptr, ks, ranks, K, R, stride_dk, stride_dr), down)
    up = load_tile(up_ptr, ranks, cols, R, N, stride_ur, stride_un)
    acc = dot_split_lhs(down * scale, up, acc, SPLIT)
    store_tile(out_ptr, acc, rows, cols, M, N, stride_om, stride_on)


def k_major(t):
    """``t`` [K, R] with its K dimension contiguous: a copy when it is not. Applied to the two adapter operands,
    which are small (rank x hidden), so the copy costs next to nothing.

    Why: on Hopper, Triton 3.6 miscompiles this kernel when an adapter operand is not contiguous along its
    dot's reduction dimension. With BLOCK_K = 64 the dx launch (down = b [N, R], up = a [R, K], both row-major)
    returned wrong dx (max error 128 at 127x255x63x7) or an illegal shared-memory access (compute-sanitizer:
    "Out-of-range shared or local address" in the K loop), on H100, torch 2.11, triton 3.6, 2026-11-28. The same
    configs are exact with the forward's layout (down = a.T, up = b.T, K contiguous), as is every config under
    the interpreter. tests/test_autotune_configs.py runs every config through both launches."""
    return t if t.stride(0) == 1 else t.t().contiguous().t()


def _launch(lhs, rhs, down, up, out, scale):
    """``out = lhs @ rhs + scale * (lhs @ down) @ up``."""
    M, K = lhs.shape
    N, R = rhs.shape[1], down.shape[1]
    down, up = k_major(down), k_major(up)
    _fused_kernel[grouped_grid(M, N)](
        lhs, rhs, down, up, out, M, N, K, R, float(scale),
        *lhs.stride(), *rhs.stride(), *down.stride(), *up.stride(), *out.stride(),
        SPLIT=up.dtype != torch.float32, BLOCK_R=rank_block(R),
    )  # fmt: skip
    return out


def _dx_fused(dy, w, b, a, t, scale, dx):
    # dx = dy @ w + scale * (dy @ b) @ a: the forward's kernel with the roles of K and N swapped. It recomputes
    # dy @ b per tile rather than reading t, as the forward recomputes x @ a.T.
    return _launch(dy, w, b, a, dx, scale)


def _backward(inputs, out, grad_out):
    return lora_backward(inputs, grad_out, _dx_fused)


@register(
    op="lora_linear",
    name="fused",
    version="1.0.2",
    dtypes=FLOATS,
    limits={"rank": (1, MAX_RANK)},
    backward=_backward,
)
def lora_linear_fused(x, w, a, b, scale, *, out):
    """One autotuned kernel: base GEMM and down projection share each x tile; the up projection is the epilogue."""
    return _launch(x, w.t(), a.t(), b.t(), out, scale)
