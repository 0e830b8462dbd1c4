"""Softmax backward shared by the softmax variants: dx = y * (dy - sum(dy * y)) per row, in fp32, any cols.

y is recomputed in fp32 from x rather than read from the forward's output: a y rounded to fp16 or bf16 puts
the gradient outside the table tolerance (eager torch.softmax's half backward fails it too). The traffic is
the same, x in place of y.

Two layouts, one program per row in each:
- rows up to ON_CHIP_MAX_COLS: x and dy held in registers, so each is read once (the traffic of the minimum: x and
  dy read, dx written);
- longer rows: one online pass for the row's max, sum of exp and dot, a second that reads x and dy again and
  writes dx.

Cutting long rows that are few into spans over several programs (as rmsnorm's autotuned forward does) was tried
and measured slower than one program per row: 26% against 44% of copy for the forward at 256x131072 bf16 on an
H200 (2026-11-28), so it was dropped.
"""

import triton
import triton.language as tl

from kernels import memory
from kernels.ops.softmax import as_rows

MAX_BLOCK_COLS = 4096
# x, dy and the fp32 work on them in registers: 16384 columns over 16 warps is 32 elements of each per thread.
ON_CHIP_MAX_COLS = 16384


@triton.jit
def _on_chip_backward_kernel(
    x_ptr, dy_ptr, dx_ptr, x_row_stride, dy_row_stride, dx_row_stride, cols, BLOCK_COLS: tl.constexpr
):  # fmt: skip
    row = tl.program_id(0)
    col_offsets = tl.arange(0, BLOCK_COLS)
    mask = col_offsets < cols
    x = tl.load(x_ptr + row * x_row_stride + col_offsets, mask=mask, other=float("-inf")).to(tl.float32)
    dy = tl.load(dy_ptr + row * dy_row_stride + col_offsets, mask=mask, other=0.0).to(tl.float32)
    # Padding reads -inf: exp gives 0, so it adds nothing to the sum or the dot.
    e = tl.exp(x - tl.max(x, axis=0))
    y = e / tl.sum(e, axis=0)
    dx = y * (dy - tl.sum(y * dy, axis=0))
    tl.store(dx_ptr + row * dx_row_stride + col_offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _softmax_backward_kernel(
    x_ptr, dy_ptr, dx_ptr, x_row_stride, dy_row_stride, dx_row_stride, cols, BLOCK_COLS: tl.constexpr
):
    row = tl.program_id(0)
    x_row = x_ptr + row * x_row_stride
    dy_row = dy_ptr + row * dy_row_stride
    dx_row = dx_ptr + row * dx_row_stride
    col_offsets = tl.arange(0, BLOCK_COLS)

    # One pass for the row statistics, online, per lane: the running max, and both sums exp(x - max) and
    # dy * exp(x - max) rescaled to it. A finite starting max keeps padding-only lanes free of inf - inf.
    max_lanes = tl.full([BLOCK_COLS], -3.0e38, dtype=tl.float32)
    sum_lanes = tl.zeros([BLOCK_COLS], dtype=tl.float32)
    dot_lanes = tl.zeros([BLOCK_COLS], dtype=tl.float32)
    for start in range(0, cols, BLOCK_COLS):
        cols_idx = start + col_offsets
        mask = cols_idx < cols
        x = tl.load(x_row + cols_idx, mask=mask, other=float("-inf")).to(tl.float32)
        dy = tl.load(dy_row + cols_idx, mask=mask, other=0.0).to(tl.float32)
        new_max = tl.maximum(max_lanes, x)
        # The smaller of the old max and x is scaled by exp(smaller - larger): one exp per element.
        scale = tl.exp(tl.minimum(max_lanes, x) - new_max)
        grew = x > max_lanes
        sum_lanes = tl.where(grew, sum_lanes * scale + 1.0, sum_lanes + scale)
        dot_lanes = tl.where(grew, dot_lanes * scale + dy, dot_lanes + dy * scale)
        max_lanes = new_max
    row_max = tl.max(max_lanes, axis=0)
    lane_weight = tl.exp(max_lanes - row_max)
    inv_sum = 1.0 / tl.sum(sum_lanes * lane_weight, axis=0)
    dot = tl.sum(dot_lanes * lane_weight, axis=0) * inv_sum

    for start in range(0, cols, BLOCK_COLS):
        cols_idx = start + col_offsets
        mask = cols_idx < cols
        x = tl.load(x_row + cols_idx, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_row + cols_idx, mask=mask, other=0.0).to(tl.float32)
        y = tl.exp(x - row_max) * inv_sum
        dx = y * (dy - dot)
        tl.store(dx_row + cols_idx, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def softmax_backward(inputs, out, grad_out):
    """Gradient of softmax with respect to x, with y recomputed in fp32 from x; rows held on chip where they fit."""
    x = inputs["x"]
    dx = memory.empty_like(x)
    x_rows, dy_rows, dx_rows = as_rows(x), as_rows(grad_out), as_rows(dx)
    rows, cols = x_rows.shape
    if cols <= ON_CHIP_MAX_COLS:
        on_chip_cols = triton.next_power_of_2(cols)
        # One warp per 512 columns, 1 to 16 (rmsnorm's fused rule, measured there at 4096 to 16384 columns).
        _on_chip_backward_kernel[(rows,)](
            x_rows, dy_rows, dx_rows, x_rows.stride(0), dy_rows.stride(0), dx_rows.stride(0), cols,
            BLOCK_COLS=on_chip_cols, num_warps=max(1, min(16, on_chip_cols // 512)),
        )  # fmt: skip
        return {"x": dx}
    block_cols = min(triton.next_power_of_2(cols), MAX_BLOCK_COLS)
    # About 16 elements per thread once rows are long; short rows get fewer warps rather than idle ones.
    num_warps = max(1, min(8, block_cols // 256))
    _softmax_backward_kernel[(rows,)](
        x_rows, dy_rows, dx_rows, x_rows.stride(0), dy_rows.stride(0), dx_rows.stride(0), cols,
        BLOCK_COLS=block_cols, num_warps=num_warps,
    )  # fmt: skip
    return {"x": dx}
