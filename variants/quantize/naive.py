"""quantize, naive: two passes, as an eager framework makes them. An absmax kernel writes every group's absmax to
scratch (for a tensor scale, per row, then a one-program reduction of the rows); a scale-and-convert kernel then
reads x again, multiplies by the reciprocal of the group's scale and encodes. x is read twice."""

import torch
import triton
import triton.language as tl

from kernels import memory
from kernels.dtypes import FLOATS
from kernels.ops import _quant
from kernels.registry import register
from variants.quantize import _codec

BLOCK_COLS = 1024
NO_BACKWARD = "quantization is not differentiable (zero gradient almost everywhere) and no training step calls it"


@triton.jit
def _group_absmax_kernel(x_ptr, absmax_ptr, stride_xr, group_len, groups_per_row, BLOCK_COLS: tl.constexpr):
    row = tl.program_id(0)
    group = tl.program_id(1)
    offsets = tl.arange(0, BLOCK_COLS)
    x_group = x_ptr + row.to(tl.int64) * stride_xr + group * group_len
    acc = tl.zeros([BLOCK_COLS], dtype=tl.int32)
    for start in range(0, group_len, BLOCK_COLS):
        # Padding lanes read 0, whose bits (0) never win the max.
        x = tl.load(x_group + start + offsets, mask=start + offsets < group_len, other=0.0)
        acc = tl.maximum(acc, _codec.abs_bits(x))
    tl.store(absmax_ptr + row * groups_per_row + group, tl.max(acc, axis=0))


@triton.jit
def _reduce_absmax_kernel(absmax_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.arange(0, BLOCK)
    acc = tl.zeros([BLOCK], dtype=tl.int32)
    for start in range(0, n, BLOCK):
        acc = tl.maximum(acc, tl.load(absmax_ptr + start + offsets, mask=start + offsets < n, other=0))
    tl.store(absmax_ptr, tl.max(acc, axis=0))


@triton.jit
def _scale_convert_kernel(
    x_ptr, absmax_ptr, q_ptr, scale_ptr, stride_xr, stride_qr, group_len, groups_per_row,
    FORMAT: tl.constexpr, TENSOR_SCALE: tl.constexpr, HW_FP8: tl.constexpr, BLOCK_COLS: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)
    group = tl.program_id(1)
    # A tensor scale is element 0 of the reduced absmax, and program (0, 0) alone writes it.
    index = 0 if TENSOR_SCALE else row * groups_per_row + group
    scale = _codec.scale_of(tl.load(absmax_ptr + index), FORMAT)
    if TENSOR_SCALE:
        if row == 0:
            tl.store(scale_ptr, scale)
    else:
        tl.store(scale_ptr + index, scale)
    inv_scale = _codec.inverse(scale)
    offsets = tl.arange(0, BLOCK_COLS)
    x_group = x_ptr + row.to(tl.int64) * stride_xr + group * group_len
    q_group = q_ptr + row.to(tl.int64) * stride_qr + group * group_len
    for start in range(0, group_len, BLOCK_COLS):
        mask = start + offsets < group_len
        x = tl.load(x_group + start + offsets, mask=mask, other=0.0)
        code = _codec.encode(x.to(tl.float32) * inv_scale, FORMAT, HW_FP8)
        tl.store(q_group + start + offsets, code.to(q_ptr.dtype.element_ty), mask=mask)


def code_view(q: torch.Tensor) -> torch.Tensor:
    """q as the integers the kernels store: int8 as is, fp8 as its bytes."""
    return q if q.dtype == torch.int8 else q.view(torch.uint8)


@register(op="quantize", name="naive", version="1.1.0", dtypes=FLOATS, modes=_quant.MODES, no_backward=NO_BACKWARD)
def quantize_naive(x, qdtype, granularity, *, out):
    """Two passes: a group-absmax kernel into scratch, then a scale-and-convert kernel; x is read twice."""
    q, scale = out
    rows, cols = x.shape
    fmt = _quant.FORMAT_OF[qdtype]
    groups_per_row = cols // _quant.BLOCK if granularity == "block" else 1
    group_len = _quant.BLOCK if granularity == "block" else cols
    absmax = memory.empty((rows, groups_per_row), dtype=torch.int32, device=x.device)
    block_cols = min(BLOCK_COLS, triton.next_power_of_2(group_len))
    grid = (rows, groups_per_row)
    _group_absmax_kernel[grid](x, absmax, x.stride(0), group_len, groups_per_row, BLOCK_COLS=block_cols)
    if granularity == "tensor":
        _reduce_absmax_kernel[(1,)](absmax, rows, BLOCK=min(BLOCK_COLS, triton.next_power_of_2(rows)))
    _scale_convert_kernel[grid](
        x, absmax, code_view(q), scale, x.stride(0), q.stride(0), group_len, groups_per_row,
        FORMAT=_codec.FORMAT_CODE[fmt], TENSOR_SCALE=granularity == "tensor", HW_FP8=_codec.hw_fp8(x.device),
        BLOCK_COLS=block_cols,
    )  # fmt: skip
    return q, scale
