"""softmax, fused: one program per row with the whole row in registers; x is read once and out written once.
Rows longer than 32768 columns would spill, so they are left to the looping variants."""

import triton
import triton.language as tl

from kernels.dtypes import FLOATS
from kernels.ops.softmax import as_rows
from kernels.registry import register
from variants.softmax._backward import softmax_backward

MAX_COLS = 32768


@triton.jit
def _softmax_fused_kernel(x_ptr, out_ptr, x_row_stride, out_row_stride, cols, BLOCK_COLS: tl.constexpr):
    row = tl.program_id(0)
    col_offsets = tl.arange(0, BLOCK_COLS)
    mask = col_offsets < cols
    # Padding lanes read -inf: they cannot win the max, and exp(-inf - max) = 0 keeps them out of the sum.
    x = tl.load(x_ptr + row * x_row_stride + col_offsets, mask=mask, other=float("-inf")).to(tl.float32)
    # Subtracting the max keeps exp() from overflowing; the result is unchanged.
    numerator = tl.exp(x - tl.max(x, axis=0))
    y = numerator / tl.sum(numerator, axis=0)
    tl.store(out_ptr + row * out_row_stride + col_offsets, y.to(out_ptr.dtype.element_ty), mask=mask)


def _num_warps(block_cols):
    # One warp per 512 columns, 4 to 16: at most 16 elements per thread, up to 64 at the 32768 limit.
    return max(4, min(16, block_cols // 512))


@register(
    op="softmax",
    name="fused",
    version="1.0.1",
    dtypes=FLOATS,
    limits={"cols": (1, MAX_COLS)},
    backward=softmax_backward,
)
def softmax_fused(x, *, out):
    """One program per row, the whole row held on chip."""
    x_rows, out_rows = as_rows(x), as_rows(out)
    rows, cols = x_rows.shape
    block_cols = triton.next_power_of_2(cols)
    _softmax_fused_kernel[(rows,)](
        x_rows,
        out_rows,
        x_rows.stride(0),
        out_rows.stride(0),
        cols,
        BLOCK_COLS=block_cols,
        num_warps=_num_warps(block_cols),
    )
    return out
