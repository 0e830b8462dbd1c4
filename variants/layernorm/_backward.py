"""Layernorm backward shared by the layernorm variants. Per row, with xhat = (x - mean) * rstd and g = dy * weight:

    dx = rstd * (g - mean(g) - xhat * mean(g * xhat))      dweight = sum over rows of dy * xhat      dbias = sum of dy

mean and rstd are recomputed from x, in fp32, rather than stashed by the forward pass: where the row is held on
chip they cost two in-register reductions and no memory traffic, and where it is not they come out of the same
pass that sums g and g * xhat. Forward then needs no stash and writes nothing but its output, and the gradient
is the same whichever variant ran forward.

dweight and dbias are reduced across rows in two steps so that the result is deterministic: each program sums
its group of rows into one row of an fp32 [groups, cols] buffer, then a second kernel sums those rows in a fixed
order.

Two layouts:
- rows up to MAX_ON_CHIP_COLS: one program per group of rows, each row read once and held on chip;
- wider rows: a first kernel over (row, column block) writes its block's mean, and the sums of squared deviations
  from it, of g and of g * (x - block mean); a second over (row group, column block) combines a row's blocks
  (Chan's parallel form, so no E[x^2] - E[x]^2 cancellation) and writes dx and the group's partial sums for its
  block.
"""

import torch
import triton
import triton.language as tl

from kernels import memory
from kernels.ops.layernorm import as_rows
from variants._row_partials import MAX_ON_CHIP_COLS, SPLIT_BLOCK_COLS, num_warps, row_groups, sum_partials


@triton.jit
def _backward_rows_kernel(
    x_ptr, w_ptr, dy_ptr, dx_ptr, dw_partial_ptr, db_partial_ptr,
    x_row_stride, dy_row_stride, dx_row_stride, rows, cols, eps, ROWS_PER_GROUP,
    BLOCK_COLS: tl.constexpr,
):  # fmt: skip
    group = tl.program_id(0)
    col_offsets = tl.arange(0, BLOCK_COLS)
    mask = col_offsets < cols
    # The weight is the same for every row of the group: read it once.
    w = tl.load(w_ptr + col_offsets, mask=mask, other=0.0).to(tl.float32)
    dw_acc = tl.zeros([BLOCK_COLS], dtype=tl.float32)
    db_acc = tl.zeros([BLOCK_COLS], dtype=tl.float32)
    first_row = group * ROWS_PER_GROUP
    last_row = tl.minimum(first_row + ROWS_PER_GROUP, rows)
    for row in range(first_row, last_row):
        x = tl.load(x_ptr + row * x_row_stride + col_offsets, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + row * dy_row_stride + col_offsets, mask=mask, other=0.0).to(tl.float32)
        mean = tl.sum(x, axis=0) / cols
        # Padding lanes are forced to 0 so they add nothing to the variance or the sums below.
        x_centred = tl.where(mask, x - mean, 0.0)
        rstd = tl.rsqrt(tl.sum(x_centred * x_centred, axis=0) / cols + eps)
        x_hat = x_centred * rstd
        g = dy * w
        mean_g = tl.sum(g, axis=0) / cols
        mean_g_xhat = tl.sum(g * x_hat, axis=0) / cols
        dx = rstd * (g - mean_g - x_hat * mean_g_xhat)
        tl.store(dx_ptr + row * dx_row_stride + col_offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        dw_acc += dy * x_hat
        db_acc += dy
    tl.store(dw_partial_ptr + group * cols + col_offsets, dw_acc, mask=mask)
    tl.store(db_partial_ptr + group * cols + col_offsets, db_acc, mask=mask)


@triton.jit
def _block_sums_kernel(
    x_ptr, w_ptr, dy_ptr, sums_ptr, x_row_stride, dy_row_stride, cols, BLOCKS, BLOCK_COLS: tl.constexpr
):
    row = tl.program_id(0)
    block = tl.program_id(1)
    cols_idx = block * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    mask = cols_idx < cols
    x = tl.load(x_ptr + row * x_row_stride + cols_idx, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + row * dy_row_stride + cols_idx, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + cols_idx, mask=mask, other=0.0).to(tl.float32)
    count = tl.minimum(cols - block * BLOCK_COLS, BLOCK_COLS).to(tl.float32)
    block_mean = tl.sum(x, axis=0) / count
    x_centred = tl.where(mask, x - block_mean, 0.0)
    g = dy * w
    # [rows, 4, BLOCKS]: each statistic's blocks are contiguous, for the vector load that combines them.
    sums_row = sums_ptr + row * 4 * BLOCKS + block
    tl.store(sums_row, block_mean)
    tl.store(sums_row + BLOCKS, tl.sum(x_centred * x_centred, axis=0))
    tl.store(sums_row + 2 * BLOCKS, tl.sum(g, axis=0))
    tl.store(sums_row + 3 * BLOCKS, tl.sum(g * x_centred, axis=0))


@triton.jit
def _backward_blocks_kernel(
    x_ptr, w_ptr, dy_ptr, dx_ptr, sums_ptr, dw_partial_ptr, db_partial_ptr,
    x_row_stride, dy_row_stride, dx_row_stride, rows, cols, eps, ROWS_PER_GROUP, BLOCKS,
    BLOCK_COLS: tl.constexpr, BLOCKS_POW2: tl.constexpr,
):  # fmt: skip
    group = tl.program_id(0)
    block = tl.program_id(1)
    cols_idx = block * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    mask = cols_idx < cols
    w = tl.load(w_ptr + cols_idx, mask=mask, other=0.0).to(tl.float32)
    # Every block of a row holds BLOCK_COLS columns but the last.
    blocks = tl.arange(0, BLOCKS_POW2)
    in_row = blocks < BLOCKS
    counts = tl.where(in_row, tl.minimum(cols - blocks * BLOCK_COLS, BLOCK_COLS), 0).to(tl.float32)
    dw_acc = tl.zeros([BLOCK_COLS], dtype=tl.float32)
    db_acc = tl.zeros([BLOCK_COLS], dtype=tl.float32)
    first_row = group * ROWS_PER_GROUP
    last_row = tl.minimum(first_row + ROWS_PER_GROUP, rows)
    for row in range(first_row, last_row):
        sums_row = sums_ptr + row * 4 * BLOCKS + blocks
        block_means = tl.load(sums_row, mask=in_row, other=0.0)
        block_m2 = tl.load(sums_row + BLOCKS, mask=in_row, other=0.0)
        block_g = tl.load(sums_row + 2 * BLOCKS, mask=in_row, other=0.0)
        block_g_xc = tl.load(sums_row + 3 * BLOCKS, mask=in_row, other=0.0)
        # Chan's combination: each block's sums are about its own mean; move them to the row's.
        mean = tl.sum(counts * block_means, axis=0) / cols
        shift = tl.where(in_row, block_means - mean, 0.0)
        rstd = tl.rsqrt(tl.sum(block_m2 + counts * shift * shift, axis=0) / cols + eps)
        mean_g = tl.sum(block_g, axis=0) / cols
        mean_g_xhat = rstd * tl.sum(block_g_xc + shift * block_g, axis=0) / cols

        x = tl.load(x_ptr + row * x_row_stride + cols_idx, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + row * dy_row_stride + cols_idx, mask=mask, other=0.0).to(tl.float32)
        x_hat = (x - mean) * rstd
        g = dy * w
        dx = rstd * (g - mean_g - x_hat * mean_g_xhat)
        tl.store(dx_ptr + row * dx_row_stride + cols_idx, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        # Padding lanes have dy = 0, so they add nothing.
        dw_acc += dy * x_hat
        db_acc += dy
    tl.store(dw_partial_ptr + group * cols + cols_idx, dw_acc, mask=mask)
    tl.store(db_partial_ptr + group * cols + cols_idx, db_acc, mask=mask)


def layernorm_backward(inputs, out, grad_out):
    """Gradients of layernorm with respect to x, weight and bias, with mean and rstd recomputed from x."""
    x, weight, bias, eps = inputs["x"], inputs["weight"], inputs["bias"], inputs["eps"]
    dx = memory.empty_like(x)
    x_rows, dy_rows, dx_rows = as_rows(x), as_rows(grad_out), as_rows(dx)
    rows, cols = x_rows.shape
    rows_per_group, groups = row_groups(rows)
    dw_partial = memory.empty((groups, cols), dtype=torch.float32, device=x.device)
    db_partial = memory.empty((groups, cols), dtype=torch.float32, device=x.device)
    if cols <= MAX_ON_CHIP_COLS:
        block_cols = triton.next_power_of_2(cols)
        _backward_rows_kernel[(groups,)](
            x_rows, weight, dy_rows, dx_rows, dw_partial, db_partial,
            x_rows.stride(0), dy_rows.stride(0), dx_rows.stride(0), rows, cols, eps, rows_per_group,
            BLOCK_COLS=block_cols, num_warps=num_warps(block_cols),
        )  # fmt: skip
    else:
        blocks = triton.cdiv(cols, SPLIT_BLOCK_COLS)
        sums = memory.empty((rows, 4, blocks), dtype=torch.float32, device=x.device)
        warps = num_warps(SPLIT_BLOCK_COLS)
        _block_sums_kernel[(rows, blocks)](
            x_rows, weight, dy_rows, sums, x_rows.stride(0), dy_rows.stride(0), cols, blocks,
            BLOCK_COLS=SPLIT_BLOCK_COLS, num_warps=warps,
        )  # fmt: skip
        _backward_blocks_kernel[(groups, blocks)](
            x_rows, weight, dy_rows, dx_rows, sums, dw_partial, db_partial,
            x_rows.stride(0), dy_rows.stride(0), dx_rows.stride(0), rows, cols, eps, rows_per_group, blocks,
            BLOCK_COLS=SPLIT_BLOCK_COLS, BLOCKS_POW2=triton.next_power_of_2(blocks), num_warps=warps,
        )  # fmt: skip
    dweight = memory.empty_like(weight)
    dbias = memory.empty_like(bias)
    sum_partials(dw_partial, dweight)
    sum_partials(db_partial, dbias)
    return {"x": dx, "weight": dweight, "bias": dbias}
