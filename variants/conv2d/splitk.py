"""conv2d, splitk: fused's implicit GEMM of [N*P*Q, C*R*S] x [C*R*S, K] with the reduction divided among SPLIT_K
programs per output tile, for layers with too few output tiles to fill the GPU (ResNet-50's 7x7 maps at batch 32:
N*P*Q = 1568 pixels x K = 512 channels is 52 tiles of 128 x 128 for 132 SMs, over a C*R*S = 4608 reduction).

The grid is (pixel tiles, channel tiles, SPLIT_K). fused's reduction is a flat loop of R * S * cdiv(C, BLOCK_K) steps
(a tap's block of BLOCK_K channels each); program `split` runs steps [split * per, (split + 1) * per) of it, the last
slice ragged, through the same tile loop (_common's tile_partial_sum), and stores its fp32 sum into slice `split` of
a [SPLIT_K, N*P*Q, K] workspace. A second kernel adds the slices in split order (never by atomics, so the result is
bitwise repeatable), then applies fused's epilogue (bias, ReLU, one rounding, out's strides: _common's
store_output_tile). With SPLIT_K = 1 the partial kernel applies that epilogue itself and there is no second kernel.

SPLIT_K is chosen on the host for each tile config from its tile count, its step count and the GPU's SM count; under
the interpreter it is a fixed 2, so the CPU tests take the split path with a ragged last slice."""

import functools

import torch
import triton
import triton.language as tl

from kernels import backend, memory
from kernels.dtypes import FLOATS
from kernels.registry import register
from kernels.tuning import autotune
from variants.conv2d._common import geometry, implicit_gemm_backward, store_output_tile, tile_partial_sum


def _config(bm, bn, bk, stages, warps):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_stages=stages, num_warps=warps)


# Split-K serves the layers with few output tiles: the 7x7 maps (N*P*Q = 1568, K = 512) and the 28x28 ones
# (N*P*Q = 25088, K = 128). Large tiles for the MMA's efficiency, the split supplying the programs small tiles would;
# 64-wide tiles where even a split leaves too few. BLOCK_K = 64 divides every ResNet channel count from 64 up.
CONFIGS = [
    _config(128, 128, 64, 4, 8),
    _config(128, 256, 64, 3, 8),
    _config(128, 64, 64, 4, 4),
    _config(64, 128, 64, 4, 4),
    _config(64, 64, 64, 5, 4),
]
# Under the interpreter a config is run, not timed: one with small tiles tests the same code in less time.
INTERPRETER_CONFIG = _config(32, 16, 16, 1, 4)
INTERPRETER_SPLIT = 2
# A slice of fewer steps than this spends more of its time filling the pipeline and storing its partial than in the
# MMA loop.
MIN_STEPS_PER_SPLIT = 4
MAX_SPLIT_K = 16
# What one more slice costs (its fp32 tile written, then read back by the sum), in steps of the tile loop: a guess
# that the GPU sweep (.bundle/sweep_conv.py) should settle.
SLICE_COST_STEPS = 2
SUM_BLOCK_M, SUM_BLOCK_N, SUM_WARPS = 64, 64, 4


@functools.cache
def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def _split_k(tiles: int, steps: int, sms: int) -> int:
    """How many slices each of `tiles` output tiles cuts its `steps` reduction steps into, for a GPU of `sms` SMs.

    A program's time is about its step count, and programs run in waves of one per SM, so a split s costs about
    cdiv(tiles * s, sms) waves of cdiv(steps, s) steps, plus SLICE_COST_STEPS for each slice past the first: the
    cheapest s wins, the smaller on a tie. This counts the wave quantization a plain "fill the SMs" rule misses: 52
    tiles on 132 SMs run 2 slices (104 programs, one wave) rather than 3 (156 programs, a second wave of 24). Only the
    shape, the config and the GPU decide, so the summation order, and the result, never varies between calls."""
    if backend.interpreting():
        wanted = INTERPRETER_SPLIT
    else:
        most = max(1, min(MAX_SPLIT_K, steps // MIN_STEPS_PER_SPLIT))
        wanted = min(
            range(1, most + 1),
            key=lambda s: triton.cdiv(tiles * s, sms) * triton.cdiv(steps, s) + SLICE_COST_STEPS * (s - 1),
        )
    # Rounding the steps per slice up can leave the last slices with nothing to do; drop them.
    per_split = triton.cdiv(steps, max(1, min(wanted, steps)))
    return triton.cdiv(steps, per_split)


def _plan(g, config_kwargs, sms) -> int:
    """SPLIT_K for a launch of the partial kernel with these tiles."""
    M = g.N * g.P * g.Q
    tiles = triton.cdiv(M, config_kwargs["BLOCK_M"]) * triton.cdiv(g.K, config_kwargs["BLOCK_N"])
    steps = g.R * g.S * triton.cdiv(g.C, config_kwargs["BLOCK_K"])
    return _split_k(tiles, steps, sms)


def _prune(configs, named_args, **kwargs):
    """The interpreter's one config; on a GPU, the configs whose pipeline fits the SM's shared memory and whose tiles
    are not wider than the layer (a 128-wide channel tile on a 64-channel layer computes half zeros)."""
    if backend.interpreting():
        return [INTERPRETER_CONFIG]
    x = named_args["x_ptr"]
    shared = torch.cuda.get_device_properties(x.device).shared_memory_per_block_optin
    K = named_args["K"]

    def fits(c):
        bm, bn, bk = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"]
        return (bm * bk + bk * bn) * x.element_size() * c.num_stages <= shared and bn <= max(64, K)

    # Keep one config whatever the layer: the smallest tiles waste the least.
    return [c for c in configs if fits(c)] or [configs[-1]]


@autotune(
    configs=CONFIGS,
    key=["N", "C", "H", "W", "K", "P", "Q", "R", "S", "stride_h", "stride_w"],
    prune_configs_by={"early_config_prune": _prune},
)
@triton.jit
def _partial_kernel(
    x_ptr, w_ptr, bias_ptr, out_ptr, part_ptr, N, C, H, W, K, P, Q,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    s_xn, s_xc, s_xh, s_xw, s_wk, s_wc, s_wr, s_ws, s_on, s_ok, s_op, s_oq,
    R: tl.constexpr, S: tl.constexpr, HAS_BIAS: tl.constexpr, RELU: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    split = tl.program_id(2)
    n_splits = tl.num_programs(2)
    # Slices are whole steps of fused's (tap, channel block) loop, so no step straddles two programs; the host drops
    # empty slices, so only the last one is short.
    steps = R * S * tl.cdiv(C, BLOCK_K)
    per_split = tl.cdiv(steps, n_splits)
    first_step = split * per_split
    end_step = tl.minimum(first_step + per_split, steps)
    acc = tile_partial_sum(
        x_ptr, w_ptr, rows, cols, first_step, end_step, N, C, H, W, K, P, Q,
        stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, s_xn, s_xc, s_xh, s_xw, s_wk, s_wc, s_wr, s_ws,
        S, BLOCK_M, BLOCK_N, BLOCK_K,
    )  # fmt: skip
    if n_splits == 1:
        # The whole reduction is here: finish as fused does, with no workspace and no second kernel.
        store_output_tile(out_ptr, bias_ptr, acc, rows, cols, N, K, P, Q, s_on, s_ok, s_op, s_oq, HAS_BIAS, RELU)
    else:
        # Workspace [SPLIT_K, N*P*Q, K], contiguous. A slice can pass 2**31 elements summed over the splits even
        # when one does not: offset it in int64.
        M = N * P * Q
        slice_ptr = part_ptr + split.to(tl.int64) * M * K
        mask = (rows < M)[:, None] & (cols < K)[None, :]
        tl.store(slice_ptr + rows[:, None] * K + cols[None, :], acc, mask=mask)


@triton.jit
def _sum_splits_kernel(
    part_ptr, bias_ptr, out_ptr, n_splits, N, K, P, Q, s_on, s_ok, s_op, s_oq,
    HAS_BIAS: tl.constexpr, RELU: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    # One [BLOCK_M output pixels, BLOCK_N output channels] tile of the workspace's slices, summed, then the epilogue.
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    M = N * P * Q
    mask = (rows < M)[:, None] & (cols < K)[None, :]
    offs = rows[:, None] * K + cols[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # Slice 0 first, then 1, ...: the same rounding on every run, which is what makes splitk deterministic. Stepping
    # the pointer slice by slice keeps the offset within one slice in int32.
    for _ in range(0, n_splits):
        acc += tl.load(part_ptr + offs, mask=mask, other=0.0)
        part_ptr += M * K
    store_output_tile(out_ptr, bias_ptr, acc, rows, cols, N, K, P, Q, s_on, s_ok, s_op, s_oq, HAS_BIAS, RELU)


@register(
    op="conv2d",
    name="splitk",
    version="1.0.0",
    dtypes=FLOATS,
    modes=("nhwc", "nchw", "epilogue"),
    backward=implicit_gemm_backward,
)
def conv2d_splitk(x, weight, bias, stride, padding, dilation, groups, relu, *, out):
    """fused's implicit GEMM split over the reduction into fp32 slices, summed in a fixed order with the epilogue."""
    g = geometry(x, weight, stride, padding, dilation)
    M = g.N * g.P * g.Q
    sms = 0 if backend.interpreting() else _sm_count(x.device)
    # The workspace must hold the most slices any config the autotuner may run asks for. When every config asks for
    # one, there is none: the partial kernel then never touches part_ptr, and out stands in for it.
    most = max(_plan(g, c.kwargs, sms) for c in [*_partial_kernel.configs, INTERPRETER_CONFIG])
    part = memory.empty((most, M, g.K), dtype=torch.float32, device=x.device) if most > 1 else out

    def grid(meta):
        return triton.cdiv(M, meta["BLOCK_M"]), triton.cdiv(g.K, meta["BLOCK_N"]), _plan(g, meta, sms)

    _partial_kernel[grid](
        x, weight, bias, out, part, g.N, g.C, g.H, g.W, g.K, g.P, g.Q, *g.conv_args,
        *x.stride(), *weight.stride(), *out.stride(),
        R=g.R, S=g.S, HAS_BIAS=bias is not None, RELU=relu,
    )  # fmt: skip
    n_splits = _plan(g, _partial_kernel.best_config.kwargs, sms)
    if n_splits > 1:
        grid = (triton.cdiv(M, SUM_BLOCK_M), triton.cdiv(g.K, SUM_BLOCK_N))
        _sum_splits_kernel[grid](
            part, bias, out, n_splits, g.N, g.K, g.P, g.Q, *out.stride(),
            HAS_BIAS=bias is not None, RELU=relu, BLOCK_M=SUM_BLOCK_M, BLOCK_N=SUM_BLOCK_N, num_warps=SUM_WARPS,
        )  # fmt: skip
    return out
