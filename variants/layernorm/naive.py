"""layernorm, naive: two kernels, one program per row each. The first computes the row's mean, then the variance
about it (two passes, no E[x^2] - E[x]^2 cancellation), into fp32 scratch; the second normalizes and applies
weight and bias."""

import torch
import triton
import triton.language as tl

from kernels import memory
from kernels.dtypes import FLOATS
from kernels.ops.layernorm import as_rows
from kernels.registry import register
from variants.layernorm._backward import layernorm_backward

BLOCK_COLS = 4096


@triton.jit
def _row_stats_kernel(x_ptr, mean_ptr, rstd_ptr, x_row_stride, cols, eps, BLOCK_COLS: tl.constexpr):
    row = tl.program_id(0)
    x_row = x_ptr + row * x_row_stride
    col_offsets = tl.arange(0, BLOCK_COLS)
    sum_lanes = tl.zeros([BLOCK_COLS], dtype=tl.float32)
    for start in range(0, cols, BLOCK_COLS):
        cols_idx = start + col_offsets
        sum_lanes += tl.load(x_row + cols_idx, mask=cols_idx < cols, other=0.0).to(tl.float32)
    mean = tl.sum(sum_lanes, axis=0) / cols
    sq_lanes = tl.zeros([BLOCK_COLS], dtype=tl.float32)
    for start in range(0, cols, BLOCK_COLS):
        cols_idx = start + col_offsets
        mask = cols_idx < cols
        x = tl.load(x_row + cols_idx, mask=mask, other=0.0).to(tl.float32)
        x_centred = tl.where(mask, x - mean, 0.0)
        sq_lanes += x_centred * x_centred
    tl.store(mean_ptr + row, mean)
    tl.store(rstd_ptr + row, tl.rsqrt(tl.sum(sq_lanes, axis=0) / cols + eps))


@triton.jit
def _normalize_kernel(
    x_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr, out_ptr, x_row_stride, out_row_stride, cols, BLOCK_COLS: tl.constexpr
):
    row = tl.program_id(0)
    x_row = x_ptr + row * x_row_stride
    out_row = out_ptr + row * out_row_stride
    col_offsets = tl.arange(0, BLOCK_COLS)
    mean = tl.load(mean_ptr + row)
    rstd = tl.load(rstd_ptr + row)
    for start in range(0, cols, BLOCK_COLS):
        cols_idx = start + col_offsets
        mask = cols_idx < cols
        x = tl.load(x_row + cols_idx, mask=mask, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + cols_idx, mask=mask, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + cols_idx, mask=mask, other=0.0).to(tl.float32)
        y = (x - mean) * rstd * w + b
        tl.store(out_row + cols_idx, y.to(out_ptr.dtype.element_ty), mask=mask)


@register(op="layernorm", name="naive", version="1.0.2", dtypes=FLOATS, backward=layernorm_backward)
def layernorm_naive(x, weight, bias, eps, *, out):
    """Two kernels per call: row mean and rstd into fp32 scratch, then normalize."""
    x_rows, out_rows = as_rows(x), as_rows(out)
    rows, cols = x_rows.shape
    mean = memory.empty((rows,), dtype=torch.float32, device=x.device)
    rstd = memory.empty((rows,), dtype=torch.float32, device=x.device)
    block_cols = min(triton.next_power_of_2(cols), BLOCK_COLS)
    meta = dict(BLOCK_COLS=block_cols, num_warps=max(1, min(8, block_cols // 512)))
    _row_stats_kernel[(rows,)](x_rows, mean, rstd, x_rows.stride(0), cols, eps, **meta)
    _normalize_kernel[(rows,)](
        x_rows, weight, bias, mean, rstd, out_rows, x_rows.stride(0), out_rows.stride(0), cols, **meta
    )
    return out
