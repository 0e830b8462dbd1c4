"""RMSNorm backward shared by the rmsnorm variants. Per row, with s = x (+ residual), xhat = s * rstd and
g = dy * weight:

    ds = rstd * (g - xhat * mean(g * xhat)) (+ the gradient of the sum output)      dweight = sum over rows of dy * xhat

and with a residual, dx = dresidual = ds. Both are written, from the same registers, rather than one tensor
returned for both: two inputs' .grad must not alias.

rstd is recomputed from x (and the residual), in fp32, rather than stashed by the forward pass: where the row is
held on chip it costs one in-register reduction, and where it is not, sum(s^2) comes out of the same pass that
sums g * s, so either way it costs no memory traffic. It is also rstd of the exact sum, as in the reference;
a forward that normalized s rounded to the output dtype would hand on a slightly different one.

dweight is reduced across rows in two steps so that the result is deterministic: each program sums its group of
rows into one row of an fp32 [groups, cols] buffer, then a second kernel sums those rows in a fixed order.

Two layouts:
- rows up to MAX_ON_CHIP_COLS: one program per group of rows, each row read once and held on chip;
- wider rows: a first kernel over (row, column block) sums s^2 and g * s of its block; a second over (row
  group, column block) adds a row's block sums in a fixed order and writes ds and the group's partial sums.
"""

import torch
import triton
import triton.language as tl

from kernels import memory
from kernels.ops.rmsnorm import as_rows
from variants._row_partials import MAX_ON_CHIP_COLS, SPLIT_BLOCK_COLS, num_warps, row_groups, sum_partials


@triton.jit
def _backward_rows_kernel(
    x_ptr, residual_ptr, w_ptr, dy_ptr, ds_ptr, dx_ptr, dresidual_ptr, dw_partial_ptr,
    x_row_stride, residual_row_stride, rows, cols, eps, ROWS_PER_GROUP,
    HAS_RESIDUAL: tl.constexpr, BLOCK_COLS: tl.constexpr,
):  # fmt: skip
    group = tl.program_id(0)
    col_offsets = tl.arange(0, BLOCK_COLS)
    mask = col_offsets < cols
    # The weight is the same for every row of the group: read it once.
    w = tl.load(w_ptr + col_offsets, mask=mask, other=0.0).to(tl.float32)
    dw_acc = tl.zeros([BLOCK_COLS], dtype=tl.float32)
    first_row = group * ROWS_PER_GROUP
    last_row = tl.minimum(first_row + ROWS_PER_GROUP, rows)
    for row in range(first_row, last_row):
        s = tl.load(x_ptr + row * x_row_stride + col_offsets, mask=mask, other=0.0).to(tl.float32)
        if HAS_RESIDUAL:
            r = tl.load(residual_ptr + row * residual_row_stride + col_offsets, mask=mask, other=0.0)
            s += r.to(tl.float32)
        # dy, ds, dx and dresidual are contiguous: the autograd glue and kernels.memory make them so.
        dy = tl.load(dy_ptr + row * cols + col_offsets, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.rsqrt(tl.sum(s * s, axis=0) / cols + eps)
        x_hat = s * rstd
        g = dy * w
        dx = rstd * (g - x_hat * (tl.sum(g * x_hat, axis=0) / cols))
        if HAS_RESIDUAL:
            dx += tl.load(ds_ptr + row * cols + col_offsets, mask=mask, other=0.0).to(tl.float32)
            tl.store(dresidual_ptr + row * cols + col_offsets, dx.to(dresidual_ptr.dtype.element_ty), mask=mask)
        tl.store(dx_ptr + row * cols + col_offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        dw_acc += dy * x_hat
    tl.store(dw_partial_ptr + group * cols + col_offsets, dw_acc, mask=mask)


@triton.jit
def _block_sums_kernel(
    x_ptr, residual_ptr, w_ptr, dy_ptr, sums_ptr, x_row_stride, residual_row_stride, cols, BLOCKS,
    HAS_RESIDUAL: tl.constexpr, BLOCK_COLS: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)
    block = tl.program_id(1)
    cols_idx = block * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    mask = cols_idx < cols
    s = tl.load(x_ptr + row * x_row_stride + cols_idx, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        s += tl.load(residual_ptr + row * residual_row_stride + cols_idx, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + row * cols + cols_idx, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + cols_idx, mask=mask, other=0.0).to(tl.float32)
    # [rows, 2, BLOCKS]: each sum's blocks are contiguous, for the vector load that adds them.
    tl.store(sums_ptr + row * 2 * BLOCKS + block, tl.sum(s * s, axis=0))
    tl.store(sums_ptr + row * 2 * BLOCKS + BLOCKS + block, tl.sum(dy * w * s, axis=0))


@triton.jit
def _backward_blocks_kernel(
    x_ptr, residual_ptr, w_ptr, dy_ptr, ds_ptr, dx_ptr, dresidual_ptr, sums_ptr, dw_partial_ptr,
    x_row_stride, residual_row_stride, rows, cols, eps, ROWS_PER_GROUP, BLOCKS,
    HAS_RESIDUAL: tl.constexpr, BLOCK_COLS: tl.constexpr, BLOCKS_POW2: tl.constexpr,
):  # fmt: skip
    group = tl.program_id(0)
    block = tl.program_id(1)
    cols_idx = block * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    mask = cols_idx < cols
    w = tl.load(w_ptr + cols_idx, mask=mask, other=0.0).to(tl.float32)
    blocks = tl.arange(0, BLOCKS_POW2)
    in_row = blocks < BLOCKS
    dw_acc = tl.zeros([BLOCK_COLS], dtype=tl.float32)
    first_row = group * ROWS_PER_GROUP
    last_row = tl.minimum(first_row + ROWS_PER_GROUP, rows)
    for row in range(first_row, last_row):
        # The same tree over the same blocks for every program of the row: they all agree on rstd bit for bit.
        sum_sq = tl.sum(tl.load(sums_ptr + row * 2 * BLOCKS + blocks, mask=in_row, other=0.0), axis=0)
        sum_gs = tl.sum(tl.load(sums_ptr + row * 2 * BLOCKS + BLOCKS + blocks, mask=in_row, other=0.0), axis=0)
        rstd = tl.rsqrt(sum_sq / cols + eps)
        mean_g_xhat = rstd * sum_gs / cols

        s = tl.load(x_ptr + row * x_row_stride + cols_idx, mask=mask, other=0.0).to(tl.float32)
        if HAS_RESIDUAL:
            s += tl.load(residual_ptr + row * residual_row_stride + cols_idx, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + row * cols + cols_idx, mask=mask, other=0.0).to(tl.float32)
        x_hat = s * rstd
        dx = rstd * (dy * w - x_hat * mean_g_xhat)
        if HAS_RESIDUAL:
            dx += tl.load(ds_ptr + row * cols + cols_idx, mask=mask, other=0.0).to(tl.float32)
            tl.store(dresidual_ptr + row * cols + cols_idx, dx.to(dresidual_ptr.dtype.element_ty), mask=mask)
        tl.store(dx_ptr + row * cols + cols_idx, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        dw_acc += dy * x_hat
    tl.store(dw_partial_ptr + group * cols + cols_idx, dw_acc, mask=mask)


def rmsnorm_backward(inputs, out, grad_out):
    """Gradients of rmsnorm with respect to x, weight and (with a residual) residual, rstd recomputed from x."""
    x, weight, eps = inputs["x"], inputs["weight"], inputs["eps"]
    residual = inputs.get("residual")
    has_residual = residual is not None
    dy, ds = grad_out if has_residual else (grad_out, None)
    x_rows, dy_rows = as_rows(x), as_rows(dy)
    rows, cols = x_rows.shape
    # Without a residual, x stands in for the pointers that are never read or written.
    residual_rows = as_rows(residual) if has_residual else x_rows
    dx = memory.empty(x.shape, dtype=x.dtype, device=x.device)
    dresidual = memory.empty(x.shape, dtype=x.dtype, device=x.device) if has_residual else dx
    ds_rows = as_rows(ds) if has_residual else dy_rows
    rows_per_group, groups = row_groups(rows)
    dw_partial = memory.empty((groups, cols), dtype=torch.float32, device=x.device)
    if cols <= MAX_ON_CHIP_COLS:
        block_cols = triton.next_power_of_2(cols)
        _backward_rows_kernel[(groups,)](
            x_rows, residual_rows, weight, dy_rows, ds_rows, dx, dresidual, dw_partial,
            x_rows.stride(0), residual_rows.stride(0), rows, cols, eps, rows_per_group,
            HAS_RESIDUAL=has_residual, BLOCK_COLS=block_cols, num_warps=num_warps(block_cols),
        )  # fmt: skip
    else:
        blocks = triton.cdiv(cols, SPLIT_BLOCK_COLS)
        sums = memory.empty((rows, 2, blocks), dtype=torch.float32, device=x.device)
        warps = num_warps(SPLIT_BLOCK_COLS)
        _block_sums_kernel[(rows, blocks)](
            x_rows, residual_rows, weight, dy_rows, sums, x_rows.stride(0), residual_rows.stride(0), cols, blocks,
            HAS_RESIDUAL=has_residual, BLOCK_COLS=SPLIT_BLOCK_COLS, num_warps=warps,
        )  # fmt: skip
        _backward_blocks_kernel[(groups, blocks)](
            x_rows, residual_rows, weight, dy_rows, ds_rows, dx, dresidual, sums, dw_partial,
            x_rows.stride(0), residual_rows.stride(0), rows, cols, eps, rows_per_group, blocks,
            HAS_RESIDUAL=has_residual, BLOCK_COLS=SPLIT_BLOCK_COLS, BLOCKS_POW2=triton.next_power_of_2(blocks),
            num_warps=warps,
        )  # fmt: skip
    dweight = memory.empty_like(weight)
    sum_partials(dw_partial, dweight)
    grads = {"x": dx, "weight": dweight}
    if has_residual:
        grads["residual"] = dresidual
    return grads
