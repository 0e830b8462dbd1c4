"""dequantize, naive: two passes, as an eager ``q.float() * scale`` makes them. A decode kernel writes every code's
fp32 value to scratch; a scale kernel reads it back, multiplies each element by its group's scale (looked up per
element) and casts. Four extra bytes per element go to memory and back."""

import torch
import triton
import triton.language as tl

from kernels import memory
from kernels.dtypes import FLOATS
from kernels.ops import _quant
from kernels.registry import register
from variants.quantize import _codec
from variants.quantize.naive import code_view

BLOCK = 1024
NO_BACKWARD = "dequantization of frozen codes: nothing trains through it"


@triton.jit
def _decode_kernel(
    q_ptr, values_ptr, stride_qr, n_cols, FORMAT: tl.constexpr, HW_FP8: tl.constexpr, BLOCK: tl.constexpr
):
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    code = tl.load(q_ptr + row.to(tl.int64) * stride_qr + cols, mask=mask, other=0).to(tl.int32)
    tl.store(values_ptr + row.to(tl.int64) * n_cols + cols, _codec.decode(code, FORMAT, HW_FP8), mask=mask)


@triton.jit
def _scale_kernel(
    values_ptr, scale_ptr, out_ptr, stride_or, n_cols, scale_stride_r, SCALE_COLS: tl.constexpr, BLOCK: tl.constexpr
):
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    values = tl.load(values_ptr + row.to(tl.int64) * n_cols + cols, mask=mask, other=0.0)
    # Each element's scale: the group's is at row * scale_stride_r + cols // SCALE_COLS (0 for a tensor scale).
    scale = tl.load(scale_ptr + row * scale_stride_r + cols // SCALE_COLS, mask=mask, other=1.0)
    tl.store(out_ptr + row.to(tl.int64) * stride_or + cols, (values * scale).to(out_ptr.dtype.element_ty), mask=mask)


@register(op="dequantize", name="naive", version="1.1.0", dtypes=FLOATS, modes=_quant.MODES, no_backward=NO_BACKWARD)
def dequantize_naive(q, scale, granularity, dtype, *, out):
    """Two passes: decode the codes to fp32 scratch, then multiply by per-element scale lookups and cast."""
    rows, cols = q.shape
    fmt = _codec.FORMAT_CODE[_quant.FORMAT_OF[q.dtype]]
    values = memory.empty((rows, cols), dtype=torch.float32, device=q.device)
    grid = (rows, triton.cdiv(cols, BLOCK))
    _decode_kernel[grid](
        code_view(q), values, q.stride(0), cols, FORMAT=fmt, HW_FP8=_codec.hw_fp8(q.device), BLOCK=BLOCK
    )
    # A scale column index of cols // SCALE_COLS: 0 for row and tensor scales (SCALE_COLS past any column).
    scale_cols = _quant.BLOCK if granularity == "block" else 2**30
    scale_stride_r = 0 if granularity == "tensor" else scale.stride(0)
    _scale_kernel[grid](values, scale, out, out.stride(0), cols, scale_stride_r, SCALE_COLS=scale_cols, BLOCK=BLOCK)
    return out
