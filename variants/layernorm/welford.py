"""layernorm, welford: rows of any length, streamed through in column blocks. Each program takes a span of a
row (the whole row when there are rows enough to fill the GPU) and folds the mean and squared deviations of
each block into running ones with Chan's update of Welford's method; a second kernel combines a row's spans
the same way and normalizes. x is read twice and out written once."""

import torch
import triton
import triton.language as tl

from kernels import memory
from kernels.dtypes import FLOATS
from kernels.ops.layernorm import as_rows
from kernels.registry import register
from variants.layernorm._backward import layernorm_backward

MAX_BLOCK_COLS = 4096
# A few waves of the 132 SMs of an H100: with fewer rows than this, rows are split into spans.
TARGET_PROGRAMS = 8 * 132


@triton.jit
def _span_stats_kernel(x_ptr, stats_ptr, x_row_stride, cols, SPAN_COLS, SPANS, BLOCK_COLS: tl.constexpr):
    row = tl.program_id(0)
    span = tl.program_id(1)
    x_row = x_ptr + row * x_row_stride
    col_offsets = tl.arange(0, BLOCK_COLS)
    span_start = span * SPAN_COLS
    span_end = tl.minimum(span_start + SPAN_COLS, cols)
    count = 0.0
    mean = 0.0
    m2 = 0.0
    for start in range(span_start, span_end, BLOCK_COLS):
        cols_idx = start + col_offsets
        mask = cols_idx < span_end
        x = tl.load(x_row + cols_idx, mask=mask, other=0.0).to(tl.float32)
        # The block's own mean and squared deviations, from registers ...
        block_count = tl.minimum(span_end - start, BLOCK_COLS).to(tl.float32)
        block_mean = tl.sum(x, axis=0) / block_count
        x_centred = tl.where(mask, x - block_mean, 0.0)
        block_m2 = tl.sum(x_centred * x_centred, axis=0)
        # ... folded into the running ones (Chan et al.): no sum of squares ever cancels.
        new_count = count + block_count
        delta = block_mean - mean
        mean += delta * (block_count / new_count)
        m2 += block_m2 + delta * delta * (count * block_count / new_count)
        count = new_count
    # [rows, 2, SPANS]: each statistic's spans are contiguous, for the vector load that combines them.
    tl.store(stats_ptr + row * 2 * SPANS + span, mean)
    tl.store(stats_ptr + row * 2 * SPANS + SPANS + span, m2)


@triton.jit
def _span_normalize_kernel(
    x_ptr, w_ptr, b_ptr, stats_ptr, out_ptr, x_row_stride, out_row_stride, cols, eps, SPAN_COLS, SPANS,
    BLOCK_COLS: tl.constexpr, SPANS_POW2: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)
    span = tl.program_id(1)
    # Combine the row's spans (all SPAN_COLS long but the last) in one step, the parallel form of Chan's update.
    spans = tl.arange(0, SPANS_POW2)
    in_row = spans < SPANS
    counts = tl.where(in_row, tl.minimum(cols - spans * SPAN_COLS, SPAN_COLS), 0).to(tl.float32)
    span_means = tl.load(stats_ptr + row * 2 * SPANS + spans, mask=in_row, other=0.0)
    span_m2 = tl.load(stats_ptr + row * 2 * SPANS + SPANS + spans, mask=in_row, other=0.0)
    mean = tl.sum(counts * span_means, axis=0) / cols
    shift = tl.where(in_row, span_means - mean, 0.0)
    rstd = tl.rsqrt(tl.sum(span_m2 + counts * shift * shift, axis=0) / cols + eps)

    x_row = x_ptr + row * x_row_stride
    out_row = out_ptr + row * out_row_stride
    col_offsets = tl.arange(0, BLOCK_COLS)
    span_start = span * SPAN_COLS
    span_end = tl.minimum(span_start + SPAN_COLS, cols)
    for start in range(span_start, span_end, BLOCK_COLS):
        cols_idx = start + col_offsets
        mask = cols_idx < span_end
        x = tl.load(x_row + cols_idx, mask=mask, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + cols_idx, mask=mask, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + cols_idx, mask=mask, other=0.0).to(tl.float32)
        y = (x - mean) * rstd * w + b
        tl.store(out_row + cols_idx, y.to(out_ptr.dtype.element_ty), mask=mask)


def _spans(rows, cols, block_cols):
    """(span length, spans per row): whole rows when there are rows enough, else spans of whole blocks."""
    blocks = triton.cdiv(cols, block_cols)
    spans = max(1, min(blocks, triton.cdiv(TARGET_PROGRAMS, rows)))
    span_cols = triton.cdiv(blocks, spans) * block_cols
    # Rounding the span up can leave the last spans empty; drop them.
    return span_cols, triton.cdiv(cols, span_cols)


@register(op="layernorm", name="welford", version="1.0.2", dtypes=FLOATS, backward=layernorm_backward)
def layernorm_welford(x, weight, bias, eps, *, out):
    """Streaming Welford/Chan statistics over column blocks, rows split into spans when few; any cols."""
    x_rows, out_rows = as_rows(x), as_rows(out)
    rows, cols = x_rows.shape
    block_cols = min(triton.next_power_of_2(cols), MAX_BLOCK_COLS)
    num_warps = max(1, min(8, block_cols // 256))
    span_cols, spans = _spans(rows, cols, block_cols)
    stats = memory.empty((rows, 2, spans), dtype=torch.float32, device=x.device)
    _span_stats_kernel[(rows, spans)](
        x_rows, stats, x_rows.stride(0), cols, span_cols, spans, BLOCK_COLS=block_cols, num_warps=num_warps
    )
    _span_normalize_kernel[(rows, spans)](
        x_rows, weight, bias, stats, out_rows, x_rows.stride(0), out_rows.stride(0), cols, eps, span_cols, spans,
        BLOCK_COLS=block_cols, SPANS_POW2=triton.next_power_of_2(spans), num_warps=num_warps,
    )  # fmt: skip
    return out
