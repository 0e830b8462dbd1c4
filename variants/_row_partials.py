"""What the layernorm and rmsnorm backwards share: how rows are grouped for the per-group partial sums of a
weight gradient, the warp count for row-length fp32 tiles, and the fixed-order sum of the partials that makes
the weight gradients deterministic. An underscore module: it registers nothing."""

import triton
import triton.language as tl

MAX_ON_CHIP_COLS = 8192
SPLIT_BLOCK_COLS = 2048
# Rows per program for the partial sums: at least MIN_ROWS_PER_GROUP, so that the [groups, cols] fp32 partials
# stay a fraction of the traffic of x, dy and dx, and at most MAX_GROUPS programs, a couple of waves on an H100.
MIN_ROWS_PER_GROUP = 8
MAX_GROUPS = 256
# Each program of the final sum reads its columns' partials through a [BLOCK_GROUPS, BLOCK_COLS] tile of
# SUM_TILE elements.
SUM_TILE = 2048


def row_groups(rows):
    """(rows per group, groups) for a backward over ``rows`` rows."""
    rows_per_group = min(rows, max(MIN_ROWS_PER_GROUP, triton.cdiv(rows, MAX_GROUPS)))
    return rows_per_group, triton.cdiv(rows, rows_per_group)


def num_warps(block_cols):
    # Up to five row-length fp32 tiles live at once: 16 elements of each per thread, 8 warps at most. 16 warps at
    # 4096 columns gave rmsnorm's backward 61% of copy and layernorm's 34%, against 60% and 55% at 8 (H200, bf16,
    # 16384 rows, triton 3.6, 2026-11-28); 32 warps lost more.
    return max(1, min(8, block_cols // 256))


@triton.jit
def _sum_partials_kernel(partial_ptr, out_ptr, groups, cols, BLOCK_GROUPS: tl.constexpr, BLOCK_COLS: tl.constexpr):
    cols_idx = tl.program_id(0) * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    col_mask = cols_idx < cols
    group_offsets = tl.arange(0, BLOCK_GROUPS)
    acc = tl.zeros([BLOCK_GROUPS, BLOCK_COLS], dtype=tl.float32)
    # The groups are always visited in the same order and summed in the same tree: a deterministic result.
    for start in range(0, groups, BLOCK_GROUPS):
        group_idx = start + group_offsets
        mask = (group_idx[:, None] < groups) & col_mask[None, :]
        acc += tl.load(partial_ptr + group_idx[:, None] * cols + cols_idx[None, :], mask=mask, other=0.0)
    tl.store(out_ptr + cols_idx, tl.sum(acc, axis=0).to(out_ptr.dtype.element_ty), mask=col_mask)


def sum_partials(partial, out):
    """``out[c] = sum over g of partial[g, c]``, in a fixed order; ``partial`` is contiguous fp32 [groups, cols]."""
    groups, cols = partial.shape
    # Tall partials (many groups) get narrow column blocks, so there are programs enough to share them.
    block_groups = min(triton.next_power_of_2(groups), SUM_TILE // 64)
    block_cols = SUM_TILE // block_groups
    _sum_partials_kernel[(triton.cdiv(cols, block_cols),)](
        partial, out, groups, cols, BLOCK_GROUPS=block_groups, BLOCK_COLS=block_cols, num_warps=4
    )
    return out
