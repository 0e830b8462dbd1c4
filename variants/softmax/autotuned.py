"""softmax, autotuned: rows of any length, the online kernel for most and spans for long rows that are few; the
op's default variant.

- Rows up to ONE_PASS_MAX_COLS columns, or rows enough to fill the GPU: the online kernel of
  variants/softmax/online.py, one program per row, its block size and warps tuned per row length.
- Longer rows, fewer than TARGET_PROGRAMS of them: each row is cut into spans (variants/softmax/_spans.py), so
  (row, span) programs fill the GPU even for a handful of rows. A first kernel finds each span's max and its sum
  of exp(x - max) into fp32 scratch; a second combines a row's span pairs, in a fixed order, and writes its span.
  x is read twice, as by the online kernel; block size and warps of both kernels are tuned.
"""

import torch
import triton
import triton.language as tl

from kernels import memory
from kernels.dtypes import FLOATS
from kernels.ops.softmax import as_rows
from kernels.registry import register
from kernels.tuning import autotune
from variants.softmax._backward import softmax_backward
from variants.softmax._spans import row_spans, takes_spans
from variants.softmax.online import _softmax_online_kernel


def _drop_oversized_blocks(configs, named_args, **kwargs):
    # A block wider than the row only idles lanes. If every block is wider, keep the narrowest: one must remain.
    fitting = [c for c in configs if c.kwargs["BLOCK_COLS"] <= triton.next_power_of_2(named_args["cols"])]
    return fitting or [min(configs, key=lambda c: (c.kwargs["BLOCK_COLS"], c.num_warps))]


_softmax_autotuned_kernel = autotune(
    configs=[
        triton.Config({"BLOCK_COLS": 1024}, num_warps=4),
        triton.Config({"BLOCK_COLS": 2048}, num_warps=8),
        triton.Config({"BLOCK_COLS": 4096}, num_warps=8),
        triton.Config({"BLOCK_COLS": 4096}, num_warps=16),
        triton.Config({"BLOCK_COLS": 8192}, num_warps=16),
    ],
    key=["cols"],
    prune_configs_by={"early_config_prune": _drop_oversized_blocks},
)(_softmax_online_kernel)


@triton.jit
def _span_stats_kernel(x_ptr, stats_ptr, x_row_stride, cols, SPAN_COLS, SPANS, BLOCK_COLS: tl.constexpr):
    row = tl.program_id(0)
    span = tl.program_id(1)
    x_row = x_ptr + row * x_row_stride
    col_offsets = tl.arange(0, BLOCK_COLS)
    span_start = span * SPAN_COLS
    span_end = tl.minimum(span_start + SPAN_COLS, cols)

    # The online kernel's first pass, over the span: per lane a running max and a sum rescaled to it, so the loop
    # needs no reduction across the block. The max starts finite, so padding-only lanes never compute inf - inf.
    max_lanes = tl.full([BLOCK_COLS], -3.0e38, dtype=tl.float32)
    sum_lanes = tl.zeros([BLOCK_COLS], dtype=tl.float32)
    for start in range(span_start, span_end, BLOCK_COLS):
        cols_idx = start + col_offsets
        x = tl.load(x_row + cols_idx, mask=cols_idx < span_end, other=float("-inf")).to(tl.float32)
        new_max = tl.maximum(max_lanes, x)
        # One exp per element: the smaller of the old max and x is scaled by exp(smaller - larger).
        scale = tl.exp(tl.minimum(max_lanes, x) - new_max)
        sum_lanes = tl.where(x > max_lanes, sum_lanes * scale + 1.0, sum_lanes + scale)
        max_lanes = new_max
    span_max = tl.max(max_lanes, axis=0)
    span_sum = tl.sum(sum_lanes * tl.exp(max_lanes - span_max), axis=0)
    # [rows, 2, SPANS]: a row's maxes, then its sums, each contiguous for the vector loads that combine them.
    tl.store(stats_ptr + row * 2 * SPANS + span, span_max)
    tl.store(stats_ptr + row * 2 * SPANS + SPANS + span, span_sum)


@triton.jit
def _span_normalize_kernel(
    x_ptr, stats_ptr, out_ptr, x_row_stride, out_row_stride, cols, SPAN_COLS, SPANS,
    BLOCK_COLS: tl.constexpr, SPANS_POW2: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)
    span = tl.program_id(1)
    # Every program of the row combines the same span pairs in the same tree, so they agree on the row's max and
    # sum bit for bit. Padding spans read max -inf and sum 0: they cannot win the max and add exp(-inf) * 0 = 0.
    spans = tl.arange(0, SPANS_POW2)
    in_row = spans < SPANS
    span_max = tl.load(stats_ptr + row * 2 * SPANS + spans, mask=in_row, other=float("-inf"))
    span_sum = tl.load(stats_ptr + row * 2 * SPANS + SPANS + spans, mask=in_row, other=0.0)
    row_max = tl.max(span_max, axis=0)
    inv_sum = 1.0 / tl.sum(span_sum * tl.exp(span_max - row_max), axis=0)

    x_row = x_ptr + row * x_row_stride
    out_row = out_ptr + row * out_row_stride
    col_offsets = tl.arange(0, BLOCK_COLS)
    span_start = span * SPAN_COLS
    span_end = tl.minimum(span_start + SPAN_COLS, cols)
    for start in range(span_start, span_end, BLOCK_COLS):
        cols_idx = start + col_offsets
        mask = cols_idx < span_end
        x = tl.load(x_row + cols_idx, mask=mask, other=0.0).to(tl.float32)
        y = tl.exp(x - row_max) * inv_sum
        tl.store(out_row + cols_idx, y.to(out_ptr.dtype.element_ty), mask=mask)


# Spans are whole multiples of SPAN_GRANULE (4096), the widest block here, so no config leaves a partial block
# inside a span. 8 to 16 elements of each fp32 lane tile per thread: wide loads, and no spills.
_SPAN_CONFIGS = [
    triton.Config({"BLOCK_COLS": 2048}, num_warps=4),
    triton.Config({"BLOCK_COLS": 4096}, num_warps=8),
    triton.Config({"BLOCK_COLS": 4096}, num_warps=16),
]
_span_stats_autotuned = autotune(configs=_SPAN_CONFIGS, key=["cols", "SPAN_COLS"])(_span_stats_kernel)
_span_normalize_autotuned = autotune(configs=_SPAN_CONFIGS, key=["cols", "SPAN_COLS"])(_span_normalize_kernel)


@register(
    op="softmax",
    name="autotuned",
    version="1.1.0",
    dtypes=FLOATS,
    backward=softmax_backward,
)
def softmax_autotuned(x, *, out):
    """The online kernel, or spans for long rows that are few; block size and warps tuned for each."""
    x_rows, out_rows = as_rows(x), as_rows(out)
    rows, cols = x_rows.shape
    if not takes_spans(rows, cols):
        _softmax_autotuned_kernel[(rows,)](x_rows, out_rows, x_rows.stride(0), out_rows.stride(0), cols)
        return out
    span_cols, spans = row_spans(rows, cols)
    stats = memory.empty((rows, 2, spans), dtype=torch.float32, device=x.device)
    _span_stats_autotuned[(rows, spans)](x_rows, stats, x_rows.stride(0), cols, span_cols, spans)
    _span_normalize_autotuned[(rows, spans)](
        x_rows, stats, out_rows, x_rows.stride(0), out_rows.stride(0), cols, span_cols, spans,
        SPANS_POW2=triton.next_power_of_2(spans),
    )  # fmt: skip
    return out
