"""rmsnorm, fused: one program per row with the whole row on chip; x is read once and out written once.
Rows longer than 32768 columns would spill (the row and the weight are live together), so they are left to the
looping variants."""

import triton
import triton.language as tl

from kernels.dtypes import FLOATS
from kernels.ops.rmsnorm import as_rows
from kernels.registry import register
from variants.rmsnorm._backward import rmsnorm_backward

MAX_COLS = 32768


@triton.jit
def _rmsnorm_fused_kernel(x_ptr, w_ptr, out_ptr, x_row_stride, out_row_stride, cols, eps, BLOCK_COLS: tl.constexpr):
    row = tl.program_id(0)
    col_offsets = tl.arange(0, BLOCK_COLS)
    mask = col_offsets < cols
    # Padding lanes read 0 and add nothing to the sum of squares.
    x = tl.load(x_ptr + row * x_row_stride + col_offsets, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x * x, axis=0) / cols + eps)
    w = tl.load(w_ptr + col_offsets, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * out_row_stride + col_offsets, (x * rstd * w).to(out_ptr.dtype.element_ty), mask=mask)


def _num_warps(block_cols):
    # One warp per 512 columns, 4 to 16: at most 16 elements of x and of weight per thread, 64 at the limit.
    return max(4, min(16, block_cols // 512))


@register(
    op="rmsnorm",
    name="fused",
    version="1.0.2",
    dtypes=FLOATS,
    limits={"cols": (1, MAX_COLS)},
    backward=rmsnorm_backward,
)
def rmsnorm_fused(x, weight, eps, *, out):
    """One program per row, the whole row held on chip, one pass."""
    x_rows, out_rows = as_rows(x), as_rows(out)
    rows, cols = x_rows.shape
    block_cols = triton.next_power_of_2(cols)
    _rmsnorm_fused_kernel[(rows,)](
        x_rows, weight, out_rows, x_rows.stride(0), out_rows.stride(0), cols, eps,
        BLOCK_COLS=block_cols, num_warps=_num_warps(block_cols),
    )  # fmt: skip
    return out
