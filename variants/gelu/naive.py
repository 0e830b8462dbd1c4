"""gelu, naive: the formula as eager PyTorch runs it, one small elementwise kernel per step, every intermediate
round-tripping through an fp32 scratch buffer in global memory. The baseline the fused variant is measured
against: three kernels forward and three or four backward, where the fused variant needs one each. Like eager
float32 PyTorch, its tanh-form backward gives NaN once x^2 overflows (|x| beyond ~1.8e19)."""

import torch
import triton
import triton.language as tl

from kernels import memory
from kernels.dtypes import FLOATS
from kernels.registry import register

BLOCK = 1024
RSQRT_2 = 0.7071067811865476  # 1 / sqrt(2), the scale applied before erf
# Inside kernels the constants are literals (Triton refuses plain Python globals in jit code): 0.39894228... is
# 1/sqrt(2*pi), 0.79788456... is sqrt(2/pi), 0.044715 the tanh form's cubic coefficient and 0.134145 three times it.


@triton.jit
def _scale_kernel(x_ptr, out_ptr, n, scale, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    x = tl.load(x_ptr + offsets, mask=mask).to(tl.float32)
    tl.store(out_ptr + offsets, x * scale, mask=mask)


@triton.jit
def _erf_kernel(z_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    z = tl.load(z_ptr + offsets, mask=mask)
    tl.store(out_ptr + offsets, tl.math.erf(z), mask=mask)


@triton.jit
def _tanh_inner_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    x = tl.load(x_ptr + offsets, mask=mask).to(tl.float32)
    tl.store(out_ptr + offsets, 0.7978845608028654 * (x + 0.044715 * x * x * x), mask=mask)


@triton.jit
def _tanh_kernel(u_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    u = tl.load(u_ptr + offsets, mask=mask)
    # tanh through exp (libdevice's tanh is not available in the interpreter). exp overflowing to inf for
    # large u still gives the limit: 1 - 2 / inf = 1.
    tl.store(out_ptr + offsets, 1.0 - 2.0 / (tl.exp(2.0 * u) + 1.0), mask=mask)


@triton.jit
def _half_x_one_plus_kernel(x_ptr, t_ptr, out_ptr, n, BLOCK: tl.constexpr):
    # 0.5 * x * (1 + t): the last step of both forms, with t = erf(x / sqrt(2)) or tanh(inner(x)).
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    x = tl.load(x_ptr + offsets, mask=mask).to(tl.float32)
    t = tl.load(t_ptr + offsets, mask=mask)
    tl.store(out_ptr + offsets, (0.5 * x * (1.0 + t)).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _normal_pdf_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    x = tl.load(x_ptr + offsets, mask=mask).to(tl.float32)
    tl.store(out_ptr + offsets, tl.exp(-0.5 * x * x) * 0.3989422804014327, mask=mask)


@triton.jit
def _erf_grad_kernel(dy_ptr, x_ptr, e_ptr, pdf_ptr, dx_ptr, n, BLOCK: tl.constexpr):
    # d/dx [x * Phi(x)] = Phi(x) + x * phi(x), with Phi = 0.5 * (1 + e) and phi = pdf from the chain.
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    dy = tl.load(dy_ptr + offsets, mask=mask).to(tl.float32)
    x = tl.load(x_ptr + offsets, mask=mask).to(tl.float32)
    e = tl.load(e_ptr + offsets, mask=mask)
    pdf = tl.load(pdf_ptr + offsets, mask=mask)
    dx = dy * (0.5 * (1.0 + e) + x * pdf)
    tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _tanh_grad_kernel(dy_ptr, x_ptr, t_ptr, dx_ptr, n, BLOCK: tl.constexpr):
    # d/dx [0.5 * x * (1 + t)] with t = tanh(u): 0.5 * (1 + t) + 0.5 * x * (1 - t^2) * du/dx.
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    dy = tl.load(dy_ptr + offsets, mask=mask).to(tl.float32)
    x = tl.load(x_ptr + offsets, mask=mask).to(tl.float32)
    t = tl.load(t_ptr + offsets, mask=mask)
    du_dx = 0.7978845608028654 * (1.0 + 0.134145 * x * x)
    dx = dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du_dx)
    tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def _scratch(n, device):
    return memory.empty((n,), dtype=torch.float32, device=device)


def _backward(inputs, out, grad_out):
    x, approximate = inputs["x"], inputs["approximate"]
    n = x.numel()
    grid = (triton.cdiv(n, BLOCK),)
    dx = memory.empty_like(x)
    if approximate == "tanh":
        u, t = _scratch(n, x.device), _scratch(n, x.device)
        _tanh_inner_kernel[grid](x, u, n, BLOCK=BLOCK)
        _tanh_kernel[grid](u, t, n, BLOCK=BLOCK)
        _tanh_grad_kernel[grid](grad_out, x, t, dx, n, BLOCK=BLOCK)
    else:
        z, e, pdf = _scratch(n, x.device), _scratch(n, x.device), _scratch(n, x.device)
        _scale_kernel[grid](x, z, n, RSQRT_2, BLOCK=BLOCK)
        _erf_kernel[grid](z, e, n, BLOCK=BLOCK)
        _normal_pdf_kernel[grid](x, pdf, n, BLOCK=BLOCK)
        _erf_grad_kernel[grid](grad_out, x, e, pdf, dx, n, BLOCK=BLOCK)
    return {"x": dx}


@register(op="gelu", name="naive", version="1.0.0", dtypes=FLOATS, modes=("erf", "tanh"), backward=_backward)
def gelu_naive(x, *, approximate, out):
    """Unfused chain of elementwise kernels through fp32 scratch, as eager PyTorch runs the formula."""
    n = x.numel()
    grid = (triton.cdiv(n, BLOCK),)
    # Two scratch buffers: the argument of erf or tanh, then its value.
    inner, t = _scratch(n, x.device), _scratch(n, x.device)
    if approximate == "tanh":
        _tanh_inner_kernel[grid](x, inner, n, BLOCK=BLOCK)
        _tanh_kernel[grid](inner, t, n, BLOCK=BLOCK)
    else:
        _scale_kernel[grid](x, inner, n, RSQRT_2, BLOCK=BLOCK)
        _erf_kernel[grid](inner, t, n, BLOCK=BLOCK)
    _half_x_one_plus_kernel[grid](x, t, out, n, BLOCK=BLOCK)
    return out
