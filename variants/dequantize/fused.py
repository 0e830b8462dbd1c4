"""dequantize, fused: one pass. Each program decodes a [BLOCK_ROWS, BLOCK_COLS] tile of codes, multiplies it by one
scale per tile row (row scales, and block scales with BLOCK_COLS = 128) or by the tensor's scale, and writes the
result: q read once, x written once. Autotuned over the tile and warps."""

import triton
import triton.language as tl

from kernels.dtypes import FLOATS
from kernels.ops import _quant
from kernels.registry import register
from kernels.tuning import autotune
from variants.dequantize.naive import NO_BACKWARD
from variants.quantize import _codec
from variants.quantize.naive import code_view


@autotune(
    configs=_codec.TILE_CONFIGS,
    key=["n_rows", "n_cols", "FORMAT", "GRANULARITY"],
    prune_configs_by={"early_config_prune": _codec.prune_tiles},
)
@triton.jit
def _dequantize_kernel(
    q_ptr, scale_ptr, out_ptr, stride_qr, stride_or, scale_stride_r, n_rows, n_cols,
    FORMAT: tl.constexpr, GRANULARITY: tl.constexpr, HW_FP8: tl.constexpr, BLOCK_ROWS: tl.constexpr,
    BLOCK_COLS: tl.constexpr,
):  # fmt: skip
    pid_c = tl.program_id(1)
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    cols = pid_c * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    row_in = rows < n_rows
    mask = row_in[:, None] & (cols[None, :] < n_cols)
    code = tl.load(q_ptr + rows[:, None].to(tl.int64) * stride_qr + cols[None, :], mask=mask, other=0)
    values = _codec.decode(code.to(tl.int32), FORMAT, HW_FP8)
    if GRANULARITY == _codec.TENSOR:
        scale = tl.load(scale_ptr)
    elif GRANULARITY == _codec.ROW:
        scale = tl.load(scale_ptr + rows * scale_stride_r, mask=row_in, other=1.0)[:, None]
    else:
        # BLOCK_COLS is 128: the tile's columns are one block of each row.
        scale = tl.load(scale_ptr + rows * scale_stride_r + pid_c, mask=row_in, other=1.0)[:, None]
    out = (values * scale).to(out_ptr.dtype.element_ty)
    tl.store(out_ptr + rows[:, None].to(tl.int64) * stride_or + cols[None, :], out, mask=mask)


@register(op="dequantize", name="fused", version="1.1.0", dtypes=FLOATS, modes=_quant.MODES, no_backward=NO_BACKWARD)
def dequantize_fused(q, scale, granularity, dtype, *, out):
    """One pass over 2-D tiles: decode, multiply by the tile rows' scales, cast and store."""
    rows, cols = q.shape
    _dequantize_kernel[lambda meta: _codec.tile_grid(meta, rows, cols)](
        code_view(q), scale, out, q.stride(0), out.stride(0), scale.stride(0), rows, cols,
        FORMAT=_codec.FORMAT_CODE[_quant.FORMAT_OF[q.dtype]], GRANULARITY=_codec.GRANULARITY_CODE[granularity],
        HW_FP8=_codec.hw_fp8(q.device),
    )  # fmt: skip
    return out
