"""rmsnorm, autotuned: rows of any length; the op's default variant.

- Up to ONE_PASS_MAX_COLS columns: one pass, each program holding BLOCK_ROWS whole rows on chip (several rows
  per program keep short rows from leaving most lanes idle); rows per program and warps are tuned per length.
- Wider rows: each row is cut into spans, enough (row, span) programs to fill the GPU even for a handful of rows.
  A first kernel sums the squares of each span into fp32 scratch; a second adds a row's span sums, in a fixed
  order, and normalizes its span. x is read twice; block size and warps of both kernels are tuned.
"""

import torch
import triton
import triton.language as tl

from kernels import memory
from kernels.dtypes import FLOATS
from kernels.ops.rmsnorm import as_rows
from kernels.registry import register
from kernels.tuning import autotune
from variants.rmsnorm._backward import rmsnorm_backward

ONE_PASS_MAX_COLS = 16384
# Spans are whole multiples of the widest tuned block, so every config tiles them exactly.
SPAN_GRANULE = 4096
# A few waves of the 132 SMs of an H100: with fewer rows than this, rows are cut into spans.
TARGET_PROGRAMS = 8 * 132


def _keep_rows_that_fit(configs, named_args, **kwargs):
    # 8 to 32 fp32 elements of the tile per thread: at least a 16-byte vector of a 16-bit dtype, and no spills.
    block_cols = kwargs["BLOCK_COLS"] if "BLOCK_COLS" in kwargs else named_args["BLOCK_COLS"]

    def per_thread(c):
        return c.kwargs["BLOCK_ROWS"] * block_cols / (32 * c.num_warps)

    fitting = [c for c in configs if 8 <= per_thread(c) <= 32]
    # Rows too short for any config to fill its threads: the config with the fewest idle lanes must remain.
    return fitting or [max(configs, key=lambda c: (min(per_thread(c), 32), -c.num_warps))]


@triton.jit
def _one_pass_kernel(
    x_ptr, w_ptr, out_ptr, x_row_stride, out_row_stride, rows, cols, eps,
    BLOCK_COLS: tl.constexpr, BLOCK_ROWS: tl.constexpr,
):  # fmt: skip
    row_idx = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    col_offsets = tl.arange(0, BLOCK_COLS)
    col_mask = col_offsets < cols
    mask = (row_idx[:, None] < rows) & col_mask[None, :]
    x = tl.load(x_ptr + row_idx[:, None] * x_row_stride + col_offsets[None, :], mask=mask, other=0.0)
    x = x.to(tl.float32)
    # Padding reads 0: it adds nothing to a row's sum of squares, and padding rows are never stored.
    rstd = tl.rsqrt(tl.sum(x * x, axis=1) / cols + eps)
    w = tl.load(w_ptr + col_offsets, mask=col_mask, other=0.0).to(tl.float32)
    y = x * rstd[:, None] * w[None, :]
    tl.store(
        out_ptr + row_idx[:, None] * out_row_stride + col_offsets[None, :], y.to(out_ptr.dtype.element_ty), mask=mask
    )


_one_pass_autotuned = autotune(
    configs=[
        triton.Config({"BLOCK_ROWS": 1}, num_warps=4),
        triton.Config({"BLOCK_ROWS": 1}, num_warps=8),
        triton.Config({"BLOCK_ROWS": 1}, num_warps=16),
        triton.Config({"BLOCK_ROWS": 4}, num_warps=4),
        triton.Config({"BLOCK_ROWS": 4}, num_warps=8),
        triton.Config({"BLOCK_ROWS": 16}, num_warps=4),
    ],
    key=["cols"],
    prune_configs_by={"early_config_prune": _keep_rows_that_fit},
)(_one_pass_kernel)


@triton.jit
def _span_sum_squares_kernel(x_ptr, sum_sq_ptr, x_row_stride, cols, SPAN_COLS, SPANS, BLOCK_COLS: tl.constexpr):
    row = tl.program_id(0)
    span = tl.program_id(1)
    x_row = x_ptr + row * x_row_stride
    col_offsets = tl.arange(0, BLOCK_COLS)
    span_start = span * SPAN_COLS
    span_end = tl.minimum(span_start + SPAN_COLS, cols)
    sq_lanes = tl.zeros([BLOCK_COLS], dtype=tl.float32)
    for start in range(span_start, span_end, BLOCK_COLS):
        cols_idx = start + col_offsets
        x = tl.load(x_row + cols_idx, mask=cols_idx < span_end, other=0.0).to(tl.float32)
        sq_lanes += x * x
    tl.store(sum_sq_ptr + row * SPANS + span, tl.sum(sq_lanes, axis=0))


@triton.jit
def _span_normalize_kernel(
    x_ptr, w_ptr, sum_sq_ptr, out_ptr, x_row_stride, out_row_stride, cols, eps, SPAN_COLS, SPANS,
    BLOCK_COLS: tl.constexpr, SPANS_POW2: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)
    span = tl.program_id(1)
    # Every program of the row adds the same span sums in the same tree, so they agree on rstd bit for bit.
    spans = tl.arange(0, SPANS_POW2)
    sum_sq = tl.sum(tl.load(sum_sq_ptr + row * SPANS + spans, mask=spans < SPANS, other=0.0), axis=0)
    rstd = tl.rsqrt(sum_sq / cols + eps)
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
        tl.store(out_row + cols_idx, (x * rstd * w).to(out_ptr.dtype.element_ty), mask=mask)


_SPAN_CONFIGS = [
    triton.Config({"BLOCK_COLS": 2048}, num_warps=4),
    triton.Config({"BLOCK_COLS": 4096}, num_warps=8),
    triton.Config({"BLOCK_COLS": 4096}, num_warps=16),
]
_span_sum_squares_autotuned = autotune(configs=_SPAN_CONFIGS, key=["cols", "SPAN_COLS"])(_span_sum_squares_kernel)
_span_normalize_autotuned = autotune(configs=_SPAN_CONFIGS, key=["cols", "SPAN_COLS"])(_span_normalize_kernel)


def _spans(rows, cols):
    """(span length, spans per row): whole rows when there are rows enough, else spans of SPAN_GRANULE."""
    granules = triton.cdiv(cols, SPAN_GRANULE)
    spans = max(1, min(granules, triton.cdiv(TARGET_PROGRAMS, rows)))
    span_cols = triton.cdiv(granules, spans) * SPAN_GRANULE
    # Rounding the span up can leave the last spans empty; drop them.
    return span_cols, triton.cdiv(cols, span_cols)


@register(op="rmsnorm", name="autotuned", version="1.0.2", dtypes=FLOATS, backward=rmsnorm_backward)
def rmsnorm_autotuned(x, weight, eps, *, out):
    """Rows on chip when they fit, else cut into spans; rows per program, block size and warps tuned."""
    x_rows, out_rows = as_rows(x), as_rows(out)
    rows, cols = x_rows.shape
    if cols <= ONE_PASS_MAX_COLS:
        _one_pass_autotuned[lambda meta: (triton.cdiv(rows, meta["BLOCK_ROWS"]),)](
            x_rows, weight, out_rows, x_rows.stride(0), out_rows.stride(0), rows, cols, eps,
            BLOCK_COLS=triton.next_power_of_2(cols),
        )  # fmt: skip
        return out
    span_cols, spans = _spans(rows, cols)
    sum_sq = memory.empty((rows, spans), dtype=torch.float32, device=x.device)
    _span_sum_squares_autotuned[(rows, spans)](x_rows, sum_sq, x_rows.stride(0), cols, span_cols, spans)
    _span_normalize_autotuned[(rows, spans)](
        x_rows, weight, sum_sq, out_rows, x_rows.stride(0), out_rows.stride(0), cols, eps, span_cols, spans,
        SPANS_POW2=triton.next_power_of_2(spans),
    )  # fmt: skip
    return out
