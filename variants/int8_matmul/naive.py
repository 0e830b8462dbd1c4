"""int8_matmul, naive: two launches, as a framework without a fused kernel would make them. The first dequantizes
the whole weight, w * scale[:, None], into an fp32 temporary [N, K] (four bytes an element where w has one); the
second is a plain tiled matmul of x by that temporary. The backward runs the same two kernels for dy @ w_deq.

The temporary stays fp32, so the result is rounded once: a 16-bit temporary would round every weight. A 16-bit x
meets the fp32 temporary through two dots, against its high and low 16-bit halves."""

import torch
import triton
import triton.language as tl

from kernels import memory
from kernels.dtypes import FLOATS
from kernels.registry import register
from variants.matmul._common import load_tile, store_tile

DEQUANT_BLOCK_N, DEQUANT_BLOCK_K = 32, 128
BLOCK_M, BLOCK_N, BLOCK_K = 64, 64, 32


@triton.jit
def _dequantize_kernel(
    w_ptr, scale_ptr, out_ptr, N, K, stride_wn, stride_wk, stride_s, stride_on, stride_ok,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    ns = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    w = load_tile(w_ptr, ns, ks, N, K, stride_wn, stride_wk)
    scale = tl.load(scale_ptr + ns * stride_s, mask=ns < N, other=0.0)
    store_tile(out_ptr, w.to(tl.float32) * scale[:, None], ns, ks, N, K, stride_on, stride_ok)


@triton.jit
def _dot_split_rhs(lhs, rhs, acc, SPLIT: tl.constexpr):
    # With SPLIT, rhs is fp32 and lhs 16-bit: rhs = hi + lo, both in lhs's dtype, keeps about twice the mantissa.
    if SPLIT:
        hi = rhs.to(lhs.dtype)
        acc = tl.dot(lhs, hi, acc)
        rhs = (rhs - hi.to(tl.float32)).to(lhs.dtype)
    return tl.dot(lhs, rhs, acc)


@triton.jit
def _matmul_kernel(
    a_ptr, b_ptr, c_ptr, M, N, K, stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    SPLIT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        a = load_tile(a_ptr, rows, ks, M, K, stride_am, stride_ak)
        b = load_tile(b_ptr, ks, cols, K, N, stride_bk, stride_bn)
        acc = _dot_split_rhs(a, b, acc, SPLIT)
    store_tile(c_ptr, acc, rows, cols, M, N, stride_cm, stride_cn)


def _dequantize(w, scale):
    N, K = w.shape
    out = memory.empty((N, K), dtype=torch.float32, device=w.device)
    grid = (triton.cdiv(N, DEQUANT_BLOCK_N), triton.cdiv(K, DEQUANT_BLOCK_K))
    _dequantize_kernel[grid](w, scale, out, N, K, *w.stride(), scale.stride(0), *out.stride(),
                             BLOCK_N=DEQUANT_BLOCK_N, BLOCK_K=DEQUANT_BLOCK_K)  # fmt: skip
    return out


def _matmul(a, b, out):
    """``out = a @ b`` for a 16-bit or fp32 ``a`` and an fp32 ``b``, any strides."""
    M, K = a.shape
    N = b.shape[1]
    grid = (triton.cdiv(M, BLOCK_M), triton.cdiv(N, BLOCK_N))
    _matmul_kernel[grid](
        a, b, out, M, N, K, *a.stride(), *b.stride(), *out.stride(),
        SPLIT=a.dtype != torch.float32, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, num_warps=4,
    )  # fmt: skip
    return out


def _backward(inputs, out, grad_out):
    x = inputs["x"]
    w_deq = _dequantize(inputs["w"], inputs["scale"])
    return {"x": _matmul(grad_out, w_deq, memory.empty(x.shape, dtype=x.dtype, device=x.device))}


@register(op="int8_matmul", name="naive", version="1.0.0", dtypes=FLOATS, backward=_backward)
def int8_matmul_naive(x, w, scale, *, out):
    """Dequantize the whole weight into an fp32 temporary, then a plain tiled matmul of x by it."""
    return _matmul(x, _dequantize(w, scale).t(), out)
