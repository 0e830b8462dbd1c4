"""conv2d, fused: the implicit GEMM of [N*P*Q, C*R*S] x [C*R*S, K] with the bias and ReLU in the epilogue,
autotuned for ResNet-50's layers (channels-last bf16 on Hopper).

Unlike implicit_gemm, the reduction is one flat loop over (tap r, s; block of BLOCK_K channels): a tap's input
coordinates are computed once per row, not per element, and on channels-last x each A row is BLOCK_K consecutive
channels of one pixel. The single loop lets Triton pipeline the whole reduction (a loop over channels nested in
loops over taps would pipeline only C / BLOCK_K steps: one for a 64-channel layer). Channels past C load as zeros,
so C need not divide by BLOCK_K (at a cost in the 3-channel stem). The fp32 accumulator gets the bias, then the
ReLU, and is rounded once at the store, in out's own strides (channels-last for channels-last x). The tile loop and
the epilogue are _common's tile_partial_sum and store_output_tile, which splitk shares."""

import triton
import triton.language as tl

from kernels import backend
from kernels.dtypes import FLOATS
from kernels.registry import register
from kernels.tuning import autotune
from variants.conv2d._common import geometry, implicit_gemm_backward, store_output_tile, tile_partial_sum
from variants.matmul._common import grouped_grid, grouped_tile


def _config(bm, bn, bk, stages, warps):
    return triton.Config(
        {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_stages=stages, num_warps=warps
    )


# ResNet-50's layers have K of 64 to 2048 and C*R*S of 64 to 4608 with N*P*Q from 1568 (conv5_x at batch 32) to
# 100352 (conv2_x): wide tiles for the large-N*P*Q layers, 64 columns for K = 64, small tiles (more programs) for
# the 7x7 maps, where 128 x 128 tiles would leave most of an H100's 132 SMs idle.
# BLOCK_K = 64 matches the smallest channel count, so no 64-channel layer loads padding channels.
CONFIGS = [
    _config(128, 128, 64, 4, 8),
    _config(128, 256, 64, 3, 8),
    _config(256, 128, 64, 3, 8),
    _config(256, 64, 64, 3, 8),
    _config(128, 64, 64, 4, 4),
    _config(64, 128, 64, 4, 4),
    _config(64, 64, 64, 5, 4),
    _config(128, 64, 32, 4, 4),
    _config(64, 64, 32, 4, 4),
]
# Under the interpreter a config is run, not timed: one with small tiles tests the same code in less time.
INTERPRETER_CONFIG = _config(32, 16, 16, 1, 4)


def _prune(configs, named_args, **kwargs):
    return [INTERPRETER_CONFIG] if backend.interpreting() else configs


@autotune(
    configs=CONFIGS,
    key=["N", "C", "H", "W", "K", "P", "Q", "R", "S", "stride_h", "stride_w"],
    prune_configs_by={"early_config_prune": _prune},
)
@triton.jit
def _fused_kernel(
    x_ptr, w_ptr, bias_ptr, out_ptr, N, C, H, W, K, P, Q,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    s_xn, s_xc, s_xh, s_xw, s_wk, s_wc, s_wr, s_ws, s_on, s_ok, s_op, s_oq,
    R: tl.constexpr, S: tl.constexpr, HAS_BIAS: tl.constexpr, RELU: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    M = N * P * Q
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, K, BLOCK_M, BLOCK_N, GROUP_M)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tile_partial_sum(
        x_ptr, w_ptr, rows, cols, 0, R * S * tl.cdiv(C, BLOCK_K), N, C, H, W, K, P, Q,
        stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, s_xn, s_xc, s_xh, s_xw, s_wk, s_wc, s_wr, s_ws,
        S, BLOCK_M, BLOCK_N, BLOCK_K,
    )  # fmt: skip
    store_output_tile(out_ptr, bias_ptr, acc, rows, cols, N, K, P, Q, s_on, s_ok, s_op, s_oq, HAS_BIAS, RELU)


@register(
    op="conv2d",
    name="fused",
    version="1.0.1",
    dtypes=FLOATS,
    modes=("nhwc", "nchw", "epilogue"),
    backward=implicit_gemm_backward,
)
def conv2d_fused(x, weight, bias, stride, padding, dilation, groups, relu, *, out):
    """Autotuned implicit GEMM looping over taps then channel blocks, with bias and ReLU in the epilogue."""
    g = geometry(x, weight, stride, padding, dilation)
    _fused_kernel[grouped_grid(g.N * g.P * g.Q, g.K)](
        x, weight, bias, out, g.N, g.C, g.H, g.W, g.K, g.P, g.Q, *g.conv_args,
        *x.stride(), *weight.stride(), *out.stride(),
        R=g.R, S=g.S, HAS_BIAS=bias is not None, RELU=relu,
    )  # fmt: skip
    return out
