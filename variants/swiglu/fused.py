"""swiglu, fused: one kernel forward (read gate and up, write y) and one backward (read gate, up and dy, write
dgate and dup), the fewest bytes each pass can move. The backward recomputes sigmoid(gate) in fp32 rather than
saving it."""

import triton
import triton.language as tl

from kernels import memory
from kernels.dtypes import FLOATS
from kernels.registry import register

# 4096 elements over 8 warps: 16 per thread, whole 16-byte vectors for every dtype.
BLOCK = 4096
NUM_WARPS = 8


@triton.jit
def _swiglu_fused_kernel(gate_ptr, up_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    g = tl.load(gate_ptr + offsets, mask=mask).to(tl.float32)
    u = tl.load(up_ptr + offsets, mask=mask).to(tl.float32)
    # silu(g) = g * sigmoid(g); exp(-g) = inf for very negative g gives the limit -0.
    y = g / (1.0 + tl.exp(-g)) * u
    tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _swiglu_fused_backward_kernel(gate_ptr, up_ptr, dy_ptr, dgate_ptr, dup_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    g = tl.load(gate_ptr + offsets, mask=mask).to(tl.float32)
    u = tl.load(up_ptr + offsets, mask=mask).to(tl.float32)
    dy = tl.load(dy_ptr + offsets, mask=mask).to(tl.float32)
    e = tl.exp(-g)
    s = 1.0 / (1.0 + e)
    silu = g * s
    # 1 - s cancels as s -> 1 (large g, where it is multiplied by g); there it equals e * s, and e <= 1 cannot
    # overflow. Below 0, 1 - s >= 1/2 is exact enough and e * s could be inf * 0.
    one_minus_s = tl.where(g > 0, e * s, 1.0 - s)
    # d silu / dg = s + g * s * (1 - s) = s + silu * (1 - s).
    dgate = dy * u * (s + silu * one_minus_s)
    tl.store(dgate_ptr + offsets, dgate.to(dgate_ptr.dtype.element_ty), mask=mask)
    tl.store(dup_ptr + offsets, (dy * silu).to(dup_ptr.dtype.element_ty), mask=mask)


def _backward(inputs, out, grad_out):
    gate, up = inputs["gate"], inputs["up"]
    n = gate.numel()
    dgate, dup = memory.empty_like(gate), memory.empty_like(up)
    _swiglu_fused_backward_kernel[(triton.cdiv(n, BLOCK),)](
        gate, up, grad_out, dgate, dup, n, BLOCK=BLOCK, num_warps=NUM_WARPS
    )
    return {"gate": dgate, "up": dup}


@register(op="swiglu", name="fused", version="1.0.0", dtypes=FLOATS, backward=_backward)
def swiglu_fused(gate, up, *, out):
    """One kernel each way: gate and up read once, y written once; the backward recomputes sigmoid(gate)."""
    n = gate.numel()
    _swiglu_fused_kernel[(triton.cdiv(n, BLOCK),)](gate, up, out, n, BLOCK=BLOCK, num_warps=NUM_WARPS)
    return out
