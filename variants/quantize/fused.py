"""quantize, fused: x is read once for row and block scales.

* row: one program per row holds the whole row in registers (up to MAX_TILE_COLS columns), takes its absmax,
  writes the scale and the codes. A longer row is read twice by its program, the second time mostly from L2.
* block: one program per [BLOCK_ROWS, 128] tile, one 1 x 128 block per tile row: absmax along the tile's rows,
  then the codes; autotuned over BLOCK_ROWS and warps.
* tensor: the scale depends on every element, and no grid-wide barrier exists, so it takes two launches: tiles
  fold their absmax into one integer with an atomic max (order-free, so still deterministic), then tiles convert.
  x is read twice; at 8192 x 8192 bf16 (128 MiB, past any L2) that is 5 bytes per element against 3, about 60% of
  copy bandwidth at best.
"""

import torch
import triton
import triton.language as tl

from kernels.dtypes import FLOATS
from kernels.ops import _quant
from kernels.registry import register
from kernels.tuning import autotune
from variants.quantize import _codec
from variants.quantize.naive import NO_BACKWARD, code_view

MAX_TILE_COLS = 16384


@triton.jit
def _row_kernel(
    x_ptr, q_ptr, scale_ptr, stride_xr, stride_qr, n_cols,
    FORMAT: tl.constexpr, HW_FP8: tl.constexpr, BLOCK_COLS: tl.constexpr, ONE_TILE: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)
    x_row = x_ptr + row.to(tl.int64) * stride_xr
    q_row = q_ptr + row.to(tl.int64) * stride_qr
    cols = tl.arange(0, BLOCK_COLS)
    if ONE_TILE:
        mask = cols < n_cols
        x = tl.load(x_row + cols, mask=mask, other=0.0)
        scale = _codec.scale_of(tl.max(_codec.abs_bits(x), axis=0), FORMAT)
        tl.store(scale_ptr + row, scale)
        code = _codec.encode(x.to(tl.float32) * _codec.inverse(scale), FORMAT, HW_FP8)
        tl.store(q_row + cols, code.to(q_ptr.dtype.element_ty), mask=mask)
    else:
        acc = tl.zeros([BLOCK_COLS], dtype=tl.int32)
        for start in range(0, n_cols, BLOCK_COLS):
            x = tl.load(x_row + start + cols, mask=start + cols < n_cols, other=0.0)
            acc = tl.maximum(acc, _codec.abs_bits(x))
        scale = _codec.scale_of(tl.max(acc, axis=0), FORMAT)
        tl.store(scale_ptr + row, scale)
        inv_scale = _codec.inverse(scale)
        for start in range(0, n_cols, BLOCK_COLS):
            mask = start + cols < n_cols
            x = tl.load(x_row + start + cols, mask=mask, other=0.0)
            code = _codec.encode(x.to(tl.float32) * inv_scale, FORMAT, HW_FP8)
            tl.store(q_row + start + cols, code.to(q_ptr.dtype.element_ty), mask=mask)


@autotune(
    configs=_codec.TILE_CONFIGS, key=["n_rows", "n_cols"], prune_configs_by={"early_config_prune": _codec.prune_tiles}
)
@triton.jit
def _tensor_absmax_kernel(
    x_ptr, absmax_ptr, stride_xr, n_rows, n_cols,
    GRANULARITY: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    cols = tl.program_id(1) * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    mask = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    x = tl.load(x_ptr + rows[:, None].to(tl.int64) * stride_xr + cols[None, :], mask=mask, other=0.0)
    # Integer max of the absmax bits: NaN-propagating, and independent of the order the tiles arrive in.
    tl.atomic_max(absmax_ptr, tl.max(tl.max(_codec.abs_bits(x), axis=1), axis=0))


@autotune(
    configs=_codec.TILE_CONFIGS,
    key=["n_rows", "n_cols", "FORMAT", "GRANULARITY"],
    prune_configs_by={"early_config_prune": _codec.prune_tiles},
)
@triton.jit
def _tile_kernel(
    x_ptr, absmax_ptr, q_ptr, scale_ptr, stride_xr, stride_qr, n_rows, n_cols,
    FORMAT: tl.constexpr, GRANULARITY: tl.constexpr, HW_FP8: tl.constexpr, BLOCK_ROWS: tl.constexpr,
    BLOCK_COLS: tl.constexpr,
):  # fmt: skip
    pid_r = tl.program_id(0)
    pid_c = tl.program_id(1)
    rows = pid_r * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    cols = pid_c * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    row_in = rows < n_rows
    mask = row_in[:, None] & (cols[None, :] < n_cols)
    x = tl.load(x_ptr + rows[:, None].to(tl.int64) * stride_xr + cols[None, :], mask=mask, other=0.0)
    if GRANULARITY == _codec.BLOCK:
        # BLOCK_COLS is 128: each tile row is one block. Padding rows read 0; their scales are never stored.
        scale = _codec.scale_of(tl.max(_codec.abs_bits(x), axis=1), FORMAT)
        tl.store(scale_ptr + rows * tl.num_programs(1) + pid_c, scale, mask=row_in)
        inv_scale = _codec.inverse(scale)[:, None]
    else:
        scale = _codec.scale_of(tl.load(absmax_ptr), FORMAT)
        if (pid_r == 0) & (pid_c == 0):
            tl.store(scale_ptr, scale)
        inv_scale = _codec.inverse(scale)
    code = _codec.encode(x.to(tl.float32) * inv_scale, FORMAT, HW_FP8)
    tl.store(q_ptr + rows[:, None].to(tl.int64) * stride_qr + cols[None, :], code.to(q_ptr.dtype.element_ty), mask=mask)


@register(op="quantize", name="fused", version="1.1.0", dtypes=FLOATS, modes=_quant.MODES, no_backward=NO_BACKWARD)
def quantize_fused(x, qdtype, granularity, *, out):
    """One pass per row (row scales) or per 1 x 128 block tile; tensor scales take an atomic-max pass first."""
    q, scale = out
    rows, cols = x.shape
    fmt = _codec.FORMAT_CODE[_quant.FORMAT_OF[qdtype]]
    hw_fp8 = _codec.hw_fp8(x.device)
    if granularity == "row":
        one_tile = cols <= MAX_TILE_COLS
        block_cols = triton.next_power_of_2(cols) if one_tile else 4096
        # 16 elements per thread, fewer for rows shorter than 512.
        warps = max(1, min(16, block_cols // 512))
        _row_kernel[(rows,)](
            x, code_view(q), scale, x.stride(0), q.stride(0), cols,
            FORMAT=fmt, HW_FP8=hw_fp8, BLOCK_COLS=block_cols, ONE_TILE=one_tile, num_warps=warps,
        )  # fmt: skip
        return q, scale
    granularity_code = _codec.GRANULARITY_CODE[granularity]
    absmax = None
    if granularity == "tensor":
        # Zeros, not poisoned scratch: the atomic max folds into it.
        absmax = torch.zeros((1,), dtype=torch.int32, device=x.device)
        _tensor_absmax_kernel[lambda meta: _codec.tile_grid(meta, rows, cols)](
            x, absmax, x.stride(0), rows, cols, GRANULARITY=granularity_code
        )
    _tile_kernel[lambda meta: _codec.tile_grid(meta, rows, cols)](
        x, absmax, code_view(q), scale, x.stride(0), q.stride(0), rows, cols,
        FORMAT=fmt, GRANULARITY=granularity_code, HW_FP8=hw_fp8,
    )  # fmt: skip
    return q, scale
