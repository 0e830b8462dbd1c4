"""Pieces both cross_entropy variants share: the reduction of per-row losses to a mean or sum, and the factor
each row's gradient is scaled by in backward."""

import torch
import triton
import triton.language as tl

from kernels import memory

MAX_BLOCK_ROWS = 1024


@triton.jit
def _reduce_rows_kernel(
    loss_ptr,
    target_ptr,
    out_ptr,
    count_ptr,
    rows,
    target_stride,
    ignore_index,
    MEAN: tl.constexpr,
    BLOCK_ROWS: tl.constexpr,
):
    # One program: a fixed order of additions, so the result is the same bit for bit on every run (atomics
    # across row programs would not be).
    row_offsets = tl.arange(0, BLOCK_ROWS)
    sum_lanes = tl.zeros([BLOCK_ROWS], dtype=tl.float32)
    count_lanes = tl.zeros([BLOCK_ROWS], dtype=tl.int32)
    for start in range(0, rows, BLOCK_ROWS):
        rows_idx = start + row_offsets
        in_bounds = rows_idx < rows
        # Ignored rows hold a loss of 0 already; they only have to be left out of the count.
        sum_lanes += tl.load(loss_ptr + rows_idx, mask=in_bounds, other=0.0)
        target = tl.load(target_ptr + rows_idx.to(tl.int64) * target_stride, mask=in_bounds, other=ignore_index)
        count_lanes += (target != ignore_index).to(tl.int32)
    total = tl.sum(sum_lanes, axis=0)
    count = tl.sum(count_lanes, axis=0).to(tl.float32)
    if MEAN:
        # Every row ignored gives 0 / 0 = NaN, as torch does.
        total = total / count
    tl.store(out_ptr, total)
    tl.store(count_ptr, count)


def reduce_rows(losses, target, out, ignore_index, reduction):
    """Write the mean or sum of the per-row ``losses`` into the 0-dim ``out``; return the number of rows counted
    (a 1-element fp32 tensor on the device, for backward)."""
    count = memory.empty((1,), dtype=torch.float32, device=losses.device)
    rows = losses.shape[0]
    block_rows = min(triton.next_power_of_2(rows), MAX_BLOCK_ROWS)
    _reduce_rows_kernel[(1,)](
        losses,
        target,
        out,
        count,
        rows,
        target.stride(0),
        ignore_index,
        MEAN=reduction == "mean",
        BLOCK_ROWS=block_rows,
        num_warps=max(1, min(8, block_rows // 128)),
    )
    return count


@triton.jit
def _count_rows_kernel(target_ptr, count_ptr, rows, target_stride, ignore_index, BLOCK_ROWS: tl.constexpr):
    row_offsets = tl.arange(0, BLOCK_ROWS)
    count_lanes = tl.zeros([BLOCK_ROWS], dtype=tl.int32)
    for start in range(0, rows, BLOCK_ROWS):
        rows_idx = start + row_offsets
        target = tl.load(target_ptr + rows_idx.to(tl.int64) * target_stride, mask=rows_idx < rows, other=ignore_index)
        count_lanes += (target != ignore_index).to(tl.int32)
    tl.store(count_ptr, tl.sum(count_lanes, axis=0).to(tl.float32))


def count_rows(target, ignore_index):
    """The number of rows whose target is not ``ignore_index``, as a 1-element fp32 tensor on the device (no host
    synchronization): what a mean divides by, for a kernel that needs it before the losses are summed."""
    count = memory.empty((1,), dtype=torch.float32, device=target.device)
    rows = target.shape[0]
    block_rows = min(triton.next_power_of_2(max(rows, 1)), MAX_BLOCK_ROWS)
    _count_rows_kernel[(1,)](
        target, count, rows, target.stride(0), ignore_index, BLOCK_ROWS=block_rows,
        num_warps=max(1, min(8, block_rows // 128)),
    )  # fmt: skip
    return count


@triton.jit
def row_grad_scale(grad_out_ptr, count_ptr, row, grad_out_stride, MEAN: tl.constexpr):
    """The factor row ``row``'s gradient is multiplied by: its own output gradient (``grad_out_stride`` 1,
    reduction none), or the one output gradient (stride 0), divided by the count for a mean."""
    scale = tl.load(grad_out_ptr + row * grad_out_stride).to(tl.float32)
    if MEAN:
        # With every row ignored the count is 0 and every stored gradient 0; torch's gradient is 0 too, and
        # max(count, 1) keeps it 0 rather than 0 * inf.
        scale = scale / tl.maximum(tl.load(count_ptr), 1.0)
    return scale


def vocab_block(vocab: int, most: int) -> tuple[int, int]:
    """A block over the vocabulary no wider than the row needs, and its warp count (about 16 elements a thread
    once rows are long; fewer warps rather than idle ones for short rows)."""
    block = min(triton.next_power_of_2(vocab), most)
    return block, max(1, min(8, block // 256))
