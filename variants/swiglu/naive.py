"""swiglu, naive: silu(gate) into an fp32 scratch buffer, then a multiply kernel; the backward is the chain
eager autograd runs (silu again, two multiplies, silu's derivative), each step its own kernel through fp32
scratch. The baseline the fused variant is measured against."""

import torch
import triton
import triton.language as tl

from kernels import memory
from kernels.dtypes import FLOATS
from kernels.registry import register

BLOCK = 1024


@triton.jit
def _silu_kernel(gate_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    g = tl.load(gate_ptr + offsets, mask=mask).to(tl.float32)
    # exp(-g) overflowing to inf for very negative g still gives the limit, g / inf = -0.
    tl.store(out_ptr + offsets, (g / (1.0 + tl.exp(-g))).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _mul_kernel(a_ptr, b_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    a = tl.load(a_ptr + offsets, mask=mask).to(tl.float32)
    b = tl.load(b_ptr + offsets, mask=mask).to(tl.float32)
    tl.store(out_ptr + offsets, (a * b).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _silu_grad_kernel(dsilu_ptr, gate_ptr, dgate_ptr, n, BLOCK: tl.constexpr):
    # d/dg [g * s(g)] = s + g * s * (1 - s), s = sigmoid(g).
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    dsilu = tl.load(dsilu_ptr + offsets, mask=mask).to(tl.float32)
    g = tl.load(gate_ptr + offsets, mask=mask).to(tl.float32)
    s = 1.0 / (1.0 + tl.exp(-g))
    dgate = dsilu * s * (1.0 + g * (1.0 - s))
    tl.store(dgate_ptr + offsets, dgate.to(dgate_ptr.dtype.element_ty), mask=mask)


def _scratch(n, device):
    return memory.empty((n,), dtype=torch.float32, device=device)


def _backward(inputs, out, grad_out):
    gate, up = inputs["gate"], inputs["up"]
    n = gate.numel()
    grid = (triton.cdiv(n, BLOCK),)
    silu, dsilu = _scratch(n, gate.device), _scratch(n, gate.device)
    dgate, dup = memory.empty_like(gate), memory.empty_like(up)
    _silu_kernel[grid](gate, silu, n, BLOCK=BLOCK)
    _mul_kernel[grid](grad_out, silu, dup, n, BLOCK=BLOCK)
    _mul_kernel[grid](grad_out, up, dsilu, n, BLOCK=BLOCK)
    _silu_grad_kernel[grid](dsilu, gate, dgate, n, BLOCK=BLOCK)
    return {"gate": dgate, "up": dup}


@register(op="swiglu", name="naive", version="1.0.0", dtypes=FLOATS, backward=_backward)
def swiglu_naive(gate, up, *, out):
    """silu(gate) into fp32 scratch, then a separate multiply by up; an unfused four-kernel backward."""
    n = gate.numel()
    grid = (triton.cdiv(n, BLOCK),)
    silu = _scratch(n, gate.device)
    _silu_kernel[grid](gate, silu, n, BLOCK=BLOCK)
    _mul_kernel[grid](silu, up, out, n, BLOCK=BLOCK)
    return out
