"""softmax, naive: three kernels, one pass each over every row: the row max, the sum of exp(x - max), then
the normalized output. Row statistics go through fp32 scratch buffers in global memory."""

import torch
import triton
import triton.language as tl

from kernels import memory
from kernels.dtypes import FLOATS
from kernels.ops.softmax import as_rows
from kernels.registry import register
from variants.softmax._backward import softmax_backward

BLOCK_COLS = 1024


@triton.jit
def _row_max_kernel(x_ptr, row_max_ptr, x_row_stride, cols, BLOCK_COLS: tl.constexpr):
    row = tl.program_id(0)
    x_row = x_ptr + row * x_row_stride
    col_offsets = tl.arange(0, BLOCK_COLS)
    max_lanes = tl.full([BLOCK_COLS], float("-inf"), dtype=tl.float32)
    for start in range(0, cols, BLOCK_COLS):
        cols_idx = start + col_offsets
        x = tl.load(x_row + cols_idx, mask=cols_idx < cols, other=float("-inf")).to(tl.float32)
        max_lanes = tl.maximum(max_lanes, x)
    tl.store(row_max_ptr + row, tl.max(max_lanes, axis=0))


@triton.jit
def _row_sum_exp_kernel(x_ptr, row_max_ptr, row_sum_ptr, x_row_stride, cols, BLOCK_COLS: tl.constexpr):
    row = tl.program_id(0)
    x_row = x_ptr + row * x_row_stride
    col_offsets = tl.arange(0, BLOCK_COLS)
    row_max = tl.load(row_max_ptr + row)
    sum_lanes = tl.zeros([BLOCK_COLS], dtype=tl.float32)
    for start in range(0, cols, BLOCK_COLS):
        cols_idx = start + col_offsets
        # Padding lanes read -inf, so they add exp(-inf) = 0.
        x = tl.load(x_row + cols_idx, mask=cols_idx < cols, other=float("-inf")).to(tl.float32)
        sum_lanes += tl.exp(x - row_max)
    tl.store(row_sum_ptr + row, tl.sum(sum_lanes, axis=0))


@triton.jit
def _normalize_kernel(
    x_ptr, row_max_ptr, row_sum_ptr, out_ptr, x_row_stride, out_row_stride, cols, BLOCK_COLS: tl.constexpr
):
    row = tl.program_id(0)
    x_row = x_ptr + row * x_row_stride
    out_row = out_ptr + row * out_row_stride
    col_offsets = tl.arange(0, BLOCK_COLS)
    row_max = tl.load(row_max_ptr + row)
    inv_sum = 1.0 / tl.load(row_sum_ptr + row)
    for start in range(0, cols, BLOCK_COLS):
        cols_idx = start + col_offsets
        mask = cols_idx < cols
        x = tl.load(x_row + cols_idx, mask=mask, other=0.0).to(tl.float32)
        y = tl.exp(x - row_max) * inv_sum
        tl.store(out_row + cols_idx, y.to(out_ptr.dtype.element_ty), mask=mask)


@register(op="softmax", name="naive", version="1.0.1", dtypes=FLOATS, backward=softmax_backward)
def softmax_naive(x, *, out):
    """Three kernels per call: row max, row sum of exponentials, normalize."""
    x_rows, out_rows = as_rows(x), as_rows(out)
    rows, cols = x_rows.shape
    row_max = memory.empty((rows,), dtype=torch.float32, device=x.device)
    row_sum = memory.empty((rows,), dtype=torch.float32, device=x.device)
    grid = (rows,)
    _row_max_kernel[grid](x_rows, row_max, x_rows.stride(0), cols, BLOCK_COLS=BLOCK_COLS)
    _row_sum_exp_kernel[grid](x_rows, row_max, row_sum, x_rows.stride(0), cols, BLOCK_COLS=BLOCK_COLS)
    _normalize_kernel[grid](
        x_rows, row_max, row_sum, out_rows, x_rows.stride(0), out_rows.stride(0), cols, BLOCK_COLS=BLOCK_COLS
    )
    return out
