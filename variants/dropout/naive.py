"""dropout, naive: one kernel draws the keep mask into a uint8 tensor, a second applies it. The mask is kept
for backward, which applies it to the output gradient with the same second kernel: one byte per element held
between forward and backward, and a write and a read of it in each direction."""

import torch
import triton
import triton.language as tl

from kernels import memory
from kernels.dtypes import FLOATS
from kernels.registry import register
from variants.dropout._mask import element_offsets, keep_mask

BLOCK = 1024


@triton.jit
def _draw_mask_kernel(mask_ptr, n, p, seed, BLOCK: tl.constexpr):
    # Philox keyed by the seed, counters from the linear index: the mask depends on nothing else, so the seeded
    # variant draws the same one.
    offsets, groups = element_offsets(tl.program_id(0), BLOCK // 4)
    keep = keep_mask(seed, groups, p)
    tl.store(mask_ptr + offsets, keep.to(tl.uint8), mask=offsets < n)


@triton.jit
def _apply_mask_kernel(x_ptr, mask_ptr, out_ptr, n, scale, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offsets = pid * BLOCK + tl.arange(0, BLOCK)
    in_bounds = offsets < n
    x = tl.load(x_ptr + offsets, mask=in_bounds).to(tl.float32)
    keep = tl.load(mask_ptr + offsets, mask=in_bounds) != 0
    # x times 0 or the scale, as torch computes it: a dropped NaN or inf stays NaN (NaN * 0), so a NaN in the
    # input is never hidden by the draw of the mask.
    y = x * tl.where(keep, scale, 0.0)
    tl.store(out_ptr + offsets, y.to(out_ptr.dtype.element_ty), mask=in_bounds)


def _apply(x, mask, out, p):
    n = out.numel()
    _apply_mask_kernel[(triton.cdiv(n, BLOCK),)](x, mask, out, n, 1.0 / (1.0 - p), BLOCK=BLOCK)
    return out


def _backward(inputs, out, grad_out):
    # d out / d x is the forward's mask times 1 / (1 - p): the same kernel, applied to the gradient.
    dx = memory.empty_like(inputs["x"])
    return {"x": _apply(grad_out, inputs["stash"]["mask"], dx, float(inputs["p"]))}


@register(op="dropout", name="naive", version="1.1.1", dtypes=FLOATS, backward=_backward, backward_reads=())
def dropout_naive(x, p, seed, *, out, stash):
    """Draw the mask into memory, then apply it; backward reapplies the stored mask."""
    p = float(p)
    n = out.numel()
    mask = memory.empty((n,), dtype=torch.uint8, device=x.device)
    _draw_mask_kernel[(triton.cdiv(n, BLOCK),)](mask, n, p, int(seed), BLOCK=BLOCK)
    if stash is not None:  # a backward will follow: keep the mask for it
        stash["mask"] = mask
    return _apply(x, mask, out, p)
