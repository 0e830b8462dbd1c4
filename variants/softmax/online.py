"""softmax, online: one pass over the row keeps a running max and a sum rescaled to it, a second pass writes
exp(x - max) / sum. Handles rows of any length; x is read twice and out written once."""

import triton
import triton.language as tl

from kernels.dtypes import FLOATS
from kernels.ops.softmax import as_rows
from kernels.registry import register
from variants.softmax._backward import softmax_backward

BLOCK_COLS = 4096
NUM_WARPS = 8


@triton.jit
def _softmax_online_kernel(x_ptr, out_ptr, x_row_stride, out_row_stride, cols, BLOCK_COLS: tl.constexpr):
    row = tl.program_id(0)
    x_row = x_ptr + row * x_row_stride
    out_row = out_ptr + row * out_row_stride
    col_offsets = tl.arange(0, BLOCK_COLS)

    # Each lane keeps its own running max and sum, so the loop needs no reduction across the block.
    # The max starts finite: with -inf, a lane that has seen only padding would compute exp(-inf - (-inf)) = NaN.
    max_lanes = tl.full([BLOCK_COLS], -3.0e38, dtype=tl.float32)
    sum_lanes = tl.zeros([BLOCK_COLS], dtype=tl.float32)
    for start in range(0, cols, BLOCK_COLS):
        cols_idx = start + col_offsets
        x = tl.load(x_row + cols_idx, mask=cols_idx < cols, other=float("-inf")).to(tl.float32)
        # NaN must propagate as in torch (a row holding a NaN is all NaN). tl.maximum and tl.minimum default to
        # NaN-ignoring maxnum/minnum on a GPU, which counted a NaN as exp(0) and left the rest of its row finite.
        new_max = tl.maximum(max_lanes, x, propagate_nan=tl.PropagateNan.ALL)
        # One exp per element: of the old max and the new x, whichever is smaller is scaled by
        # exp(smaller - larger), which is exp(-inf) = 0 for padding.
        scale = tl.exp(tl.minimum(max_lanes, x, propagate_nan=tl.PropagateNan.ALL) - new_max)
        sum_lanes = tl.where(x > max_lanes, sum_lanes * scale + 1.0, sum_lanes + scale)
        max_lanes = new_max
    row_max = tl.max(max_lanes, axis=0)
    inv_sum = 1.0 / tl.sum(sum_lanes * tl.exp(max_lanes - row_max), axis=0)

    for start in range(0, cols, BLOCK_COLS):
        cols_idx = start + col_offsets
        mask = cols_idx < cols
        x = tl.load(x_row + cols_idx, mask=mask, other=0.0).to(tl.float32)
        y = tl.exp(x - row_max) * inv_sum
        tl.store(out_row + cols_idx, y.to(out_ptr.dtype.element_ty), mask=mask)


@register(op="softmax", name="online", version="1.0.2", dtypes=FLOATS, backward=softmax_backward)
def softmax_online(x, *, out):
    """Online max and sum in one pass over each row, then a pass that writes the output."""
    x_rows, out_rows = as_rows(x), as_rows(out)
    rows, cols = x_rows.shape
    # Short rows take a block that fits them, so few lanes idle.
    block_cols = min(triton.next_power_of_2(cols), BLOCK_COLS)
    _softmax_online_kernel[(rows,)](
        x_rows,
        out_rows,
        x_rows.stride(0),
        out_rows.stride(0),
        cols,
        BLOCK_COLS=block_cols,
        num_warps=max(1, min(NUM_WARPS, block_cols // 256)),
    )
    return out
