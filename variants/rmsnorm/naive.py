"""rmsnorm, naive: separate kernels, one program per row each: with a residual, a first kernel writes
s = x + residual; then the row's sum of squares goes to fp32 scratch, and a last kernel normalizes. In residual
mode the later kernels read s back as written (rounded to the output dtype), as eager PyTorch would."""

import torch
import triton
import triton.language as tl

from kernels import memory
from kernels.dtypes import FLOATS
from kernels.ops.rmsnorm import as_rows
from kernels.registry import register
from variants.rmsnorm._backward import rmsnorm_backward

BLOCK_COLS = 4096


@triton.jit
def _add_kernel(
    x_ptr, residual_ptr, sum_ptr, x_row_stride, residual_row_stride, sum_row_stride, cols, BLOCK_COLS: tl.constexpr
):
    row = tl.program_id(0)
    col_offsets = tl.arange(0, BLOCK_COLS)
    for start in range(0, cols, BLOCK_COLS):
        cols_idx = start + col_offsets
        mask = cols_idx < cols
        x = tl.load(x_ptr + row * x_row_stride + cols_idx, mask=mask, other=0.0).to(tl.float32)
        r = tl.load(residual_ptr + row * residual_row_stride + cols_idx, mask=mask, other=0.0).to(tl.float32)
        tl.store(sum_ptr + row * sum_row_stride + cols_idx, (x + r).to(sum_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _sum_squares_kernel(x_ptr, sum_sq_ptr, x_row_stride, cols, BLOCK_COLS: tl.constexpr):
    row = tl.program_id(0)
    x_row = x_ptr + row * x_row_stride
    col_offsets = tl.arange(0, BLOCK_COLS)
    sq_lanes = tl.zeros([BLOCK_COLS], dtype=tl.float32)
    for start in range(0, cols, BLOCK_COLS):
        cols_idx = start + col_offsets
        x = tl.load(x_row + cols_idx, mask=cols_idx < cols, other=0.0).to(tl.float32)
        sq_lanes += x * x
    tl.store(sum_sq_ptr + row, tl.sum(sq_lanes, axis=0))


@triton.jit
def _normalize_kernel(
    x_ptr, w_ptr, sum_sq_ptr, out_ptr, x_row_stride, out_row_stride, cols, eps, BLOCK_COLS: tl.constexpr
):
    row = tl.program_id(0)
    x_row = x_ptr + row * x_row_stride
    out_row = out_ptr + row * out_row_stride
    col_offsets = tl.arange(0, BLOCK_COLS)
    rstd = tl.rsqrt(tl.load(sum_sq_ptr + row) / cols + eps)
    for start in range(0, cols, BLOCK_COLS):
        cols_idx = start + col_offsets
        mask = cols_idx < cols
        x = tl.load(x_row + cols_idx, mask=mask, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + cols_idx, mask=mask, other=0.0).to(tl.float32)
        tl.store(out_row + cols_idx, (x * rstd * w).to(out_ptr.dtype.element_ty), mask=mask)


@register(
    op="rmsnorm",
    name="naive",
    version="1.0.2",
    dtypes=FLOATS,
    modes=("default", "residual"),
    backward=rmsnorm_backward,
)
def rmsnorm_naive(x, weight, eps, residual=None, *, out):
    """Separate kernels per call: the residual sum, the row sum of squares into fp32 scratch, normalize."""
    x_rows = as_rows(x)
    rows, cols = x_rows.shape
    block_cols = min(triton.next_power_of_2(cols), BLOCK_COLS)
    meta = dict(BLOCK_COLS=block_cols, num_warps=max(1, min(8, block_cols // 512)))
    grid = (rows,)
    if residual is None:
        out_rows = as_rows(out)
        src_rows = x_rows
    else:
        out_rows, src_rows = as_rows(out[0]), as_rows(out[1])
        residual_rows = as_rows(residual)
        _add_kernel[grid](
            x_rows, residual_rows, src_rows, x_rows.stride(0), residual_rows.stride(0), src_rows.stride(0), cols, **meta
        )
    sum_sq = memory.empty((rows,), dtype=torch.float32, device=x.device)
    _sum_squares_kernel[grid](src_rows, sum_sq, src_rows.stride(0), cols, **meta)
    _normalize_kernel[grid](
        src_rows, weight, sum_sq, out_rows, src_rows.stride(0), out_rows.stride(0), cols, eps, **meta
    )
    return out
