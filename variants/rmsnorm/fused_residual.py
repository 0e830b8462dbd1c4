"""rmsnorm, fused_residual: one kernel adds the residual and normalizes, one program per row with the row on chip:
x and residual are read once, and the normalized output and the sum written once each. The sum is normalized in
fp32, before it is rounded for the store. Rows longer than 16384 columns are left to naive: at 32768, with the
sum and the weight live together, ptxas (sm_90) reports spills."""

import triton
import triton.language as tl

from kernels.dtypes import FLOATS
from kernels.ops.rmsnorm import as_rows
from kernels.registry import register
from variants.rmsnorm._backward import rmsnorm_backward

MAX_COLS = 16384


@triton.jit
def _rmsnorm_fused_residual_kernel(
    x_ptr, residual_ptr, w_ptr, out_ptr, sum_ptr, x_row_stride, residual_row_stride, out_row_stride, cols, eps,
    BLOCK_COLS: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)
    col_offsets = tl.arange(0, BLOCK_COLS)
    mask = col_offsets < cols
    x = tl.load(x_ptr + row * x_row_stride + col_offsets, mask=mask, other=0.0).to(tl.float32)
    r = tl.load(residual_ptr + row * residual_row_stride + col_offsets, mask=mask, other=0.0).to(tl.float32)
    s = x + r
    tl.store(sum_ptr + row * out_row_stride + col_offsets, s.to(sum_ptr.dtype.element_ty), mask=mask)
    rstd = tl.rsqrt(tl.sum(s * s, axis=0) / cols + eps)
    w = tl.load(w_ptr + col_offsets, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * out_row_stride + col_offsets, (s * rstd * w).to(out_ptr.dtype.element_ty), mask=mask)


def _num_warps(block_cols):
    # One warp per 512 columns, 4 to 16: at most 16 elements of the sum and of weight per thread, 32 at the limit.
    return max(4, min(16, block_cols // 512))


@register(
    op="rmsnorm",
    name="fused_residual",
    version="1.0.2",
    dtypes=FLOATS,
    limits={"cols": (1, MAX_COLS)},
    modes=("residual",),
    backward=rmsnorm_backward,
)
def rmsnorm_fused_residual(x, weight, eps, residual, *, out):
    """One kernel: s = x + residual and its normalization, both written, the row held on chip."""
    x_rows, residual_rows = as_rows(x), as_rows(residual)
    out_rows, sum_rows = as_rows(out[0]), as_rows(out[1])
    rows, cols = x_rows.shape
    block_cols = triton.next_power_of_2(cols)
    _rmsnorm_fused_residual_kernel[(rows,)](
        x_rows, residual_rows, weight, out_rows, sum_rows,
        x_rows.stride(0), residual_rows.stride(0), out_rows.stride(0), cols, eps,
        BLOCK_COLS=block_cols, num_warps=_num_warps(block_cols),
    )  # fmt: skip
    return out
