"""int8_matmul, autotuned: one kernel that dequantizes int8 weight tiles on the fly (load one byte an element,
convert in registers, dot in x's dtype, fp32 sum, scale after the sum), with the tile shape and pipeline depth
chosen per (M, N, K) by benchmarking. Most configs aim at decode (M = 1 to 16, N = K = 8192), where the op streams
the weight once and is bound by memory: 16-row tiles (the smallest a dot takes), narrow N tiles so that N = 8192
gives hundreds of programs, wide K steps and several stages so that each program keeps many weight loads in flight.
The last three serve prefill, where the op is a GEMM bound by the tensor cores."""

import triton
import triton.language as tl

from kernels import backend
from kernels.dtypes import FLOATS
from kernels.registry import register
from kernels.tuning import autotune
from variants.int8_matmul._common import dx_dequant_on_the_fly, int8_dot, scale_columns
from variants.matmul._common import grouped_grid, grouped_tile, store_tile


def _config(bm, bn, bk, stages, warps):
    return triton.Config(
        {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_stages=stages, num_warps=warps
    )


# On an H100 (triton 3.6, bf16, do_bench) a sweep of 16-row tiles over BLOCK_N 16 to 128, BLOCK_K 128 to 1024, 2 to 8
# warps and 2 to 6 stages plateaued at 0.037 to 0.039 ms for M = 1 and 16 at N = K = 8192: the decode configs below
# are within 1% of the sweep's best, and the tile shape is not what limits the op there.
CONFIGS = [
    # Decode. BLOCK_N = 32 makes 256 programs at N = 8192, 16 makes 512; a stage holds BLOCK_N * BLOCK_K weight
    # bytes plus a 16 x BLOCK_K tile of x, which all programs share from L2.
    _config(16, 32, 512, 4, 4),
    _config(16, 64, 256, 4, 4),
    _config(16, 16, 512, 6, 4),
    _config(16, 64, 512, 3, 4),
    _config(16, 128, 256, 3, 8),
    # Prefill: matmul's tiles for 16-bit operands on Hopper. fp32 x does not fit the widest in shared memory, and
    # the autotuner drops a config that is out of resources.
    _config(64, 64, 128, 4, 4),
    _config(128, 128, 64, 4, 8),
    _config(128, 256, 64, 3, 8),
]


def _interpreter_keeps_one(configs, named_args, **kwargs):
    # Under the interpreter a config is run, not timed, so one is enough for the generated cases: the first, a
    # decode tile. tests/test_int8_matmul.py runs every config once.
    return configs[:1] if backend.interpreting() else configs


@autotune(configs=CONFIGS, key=["M", "N", "K"], prune_configs_by={"early_config_prune": _interpreter_keeps_one})
@triton.jit
def _autotuned_kernel(
    x_ptr, w_ptr, scale_ptr, out_ptr, M, N, K,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_s, stride_om, stride_on,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = int8_dot(x_ptr, w_ptr, rows, cols, 0, K, M, N, K, stride_xm, stride_xk, stride_wn, stride_wk,
                   BLOCK_M, BLOCK_N, BLOCK_K)  # fmt: skip
    acc = scale_columns(acc, scale_ptr, cols, N, stride_s)
    store_tile(out_ptr, acc, rows, cols, M, N, stride_om, stride_on)


def launch(x, w, scale, out, **config):
    """The kernel on ``config`` (a Config's kwargs, num_warps and num_stages) instead of the autotuner's choice,
    for the test that runs every config; with no config, through the autotuner."""
    M, K = x.shape
    N = w.shape[0]
    kernel = _autotuned_kernel.fn if config else _autotuned_kernel
    kernel[grouped_grid(M, N)](
        x, w, scale, out, M, N, K, *x.stride(), *w.stride(), scale.stride(0), *out.stride(), **config
    )
    return out


@register(op="int8_matmul", name="autotuned", version="1.0.0", dtypes=FLOATS, backward=dx_dequant_on_the_fly)
def int8_matmul_autotuned(x, w, scale, *, out):
    """Weight tiles dequantized on the fly in one kernel, tiles autotuned per shape with decode-sized configs."""
    return launch(x, w, scale, out)
