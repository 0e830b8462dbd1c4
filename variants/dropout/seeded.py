"""dropout, seeded: one kernel draws each element's Philox number in registers and writes the scaled or
zeroed element; nothing is stored for backward but the seed, and backward runs the same kernel on the output
gradient, redrawing the identical mask from the seed and the linear index. x is read once and out written
once in each direction."""

import triton
import triton.language as tl

from kernels import memory
from kernels.dtypes import FLOATS
from kernels.registry import register
from variants.dropout._mask import element_offsets, keep_mask

BLOCK = 1024


@triton.jit
def _dropout_seeded_kernel(x_ptr, out_ptr, n, p, scale, seed, BLOCK: tl.constexpr):
    # Element by element as a [BLOCK / 4, 4] tile: each row of four shares one Philox evaluation. The counters come
    # from the linear index, not a position within the block, so the mask does not depend on BLOCK and matches the
    # naive variant's stored one bit for bit.
    offsets, groups = element_offsets(tl.program_id(0), BLOCK // 4)
    in_bounds = offsets < n
    x = tl.load(x_ptr + offsets, mask=in_bounds).to(tl.float32)
    keep = keep_mask(seed, groups, p)
    # x times 0 or the scale, as torch computes it: a dropped NaN or inf stays NaN (NaN * 0), so a NaN in the
    # input is never hidden by the draw of the mask.
    y = x * tl.where(keep, scale, 0.0)
    tl.store(out_ptr + offsets, y.to(out_ptr.dtype.element_ty), mask=in_bounds)


def _launch(x, out, p, seed):
    n = out.numel()
    p = float(p)
    _dropout_seeded_kernel[(triton.cdiv(n, BLOCK),)](x, out, n, p, 1.0 / (1.0 - p), int(seed), BLOCK=BLOCK)
    return out


def _backward(inputs, out, grad_out):
    # The gradient is the output gradient through the same mask and scale: redraw it rather than store it.
    dx = memory.empty_like(inputs["x"])
    return {"x": _launch(grad_out, dx, inputs["p"], inputs["seed"])}


@register(op="dropout", name="seeded", version="1.1.1", dtypes=FLOATS, backward=_backward, backward_reads=())
def dropout_seeded(x, p, seed, *, out):
    """Mask drawn in registers from the seed; backward redraws it instead of storing it."""
    return _launch(x, out, p, seed)
