"""layernorm, fused: one program per row with the whole row on chip; x is read once and out written once.
Rows longer than 16384 columns would spill (the row, weight and bias are live together), so they are left to
the looping variants."""

import triton
import triton.language as tl

from kernels.dtypes import FLOATS
from kernels.ops.layernorm import as_rows
from kernels.registry import register
from variants.layernorm._backward import layernorm_backward

MAX_COLS = 16384


@triton.jit
def _layernorm_fused_kernel(
    x_ptr, w_ptr, b_ptr, out_ptr, x_row_stride, out_row_stride, cols, eps, BLOCK_COLS: tl.constexpr
):
    row = tl.program_id(0)
    col_offsets = tl.arange(0, BLOCK_COLS)
    mask = col_offsets < cols
    x = tl.load(x_ptr + row * x_row_stride + col_offsets, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=0) / cols
    # The variance about the mean, from the row in registers: exact where E[x^2] - E[x]^2 would cancel.
    x_centred = tl.where(mask, x - mean, 0.0)
    rstd = tl.rsqrt(tl.sum(x_centred * x_centred, axis=0) / cols + eps)
    w = tl.load(w_ptr + col_offsets, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + col_offsets, mask=mask, other=0.0).to(tl.float32)
    y = x_centred * rstd * w + b
    tl.store(out_ptr + row * out_row_stride + col_offsets, y.to(out_ptr.dtype.element_ty), mask=mask)


def _num_warps(block_cols):
    # One warp per 512 columns, 4 to 8. 16 warps, tried at 8192 and 16384 columns, lost 5 and 34 points of the
    # copy bandwidth to 8 (H200, bf16, triton 3.6, 2026-11-28: 90% and 92.5% of copy at 8 warps).
    return max(4, min(8, block_cols // 512))


@register(
    op="layernorm",
    name="fused",
    version="1.0.2",
    dtypes=FLOATS,
    limits={"cols": (1, MAX_COLS)},
    backward=layernorm_backward,
)
def layernorm_fused(x, weight, bias, eps, *, out):
    """One program per row, the whole row held on chip, one pass."""
    x_rows, out_rows = as_rows(x), as_rows(out)
    rows, cols = x_rows.shape
    block_cols = triton.next_power_of_2(cols)
    _layernorm_fused_kernel[(rows,)](
        x_rows, weight, bias, out_rows, x_rows.stride(0), out_rows.stride(0), cols, eps,
        BLOCK_COLS=block_cols, num_warps=_num_warps(block_cols),
    )  # fmt: skip
    return out
