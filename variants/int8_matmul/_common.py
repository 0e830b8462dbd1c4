"""Pieces the int8_matmul variants share: the main loop that dequantizes int8 weight tiles on the fly, the scale
epilogue, and the backward, dx = (dy * scale) @ w, with the weight dequantized on the fly too.

An underscore module: it registers nothing.
"""

import torch
import triton
import triton.language as tl

from kernels import memory
from variants.lora_linear._common import dot_split_lhs
from variants.matmul._common import load_tile, store_tile


@triton.jit
def int8_dot(
    x_ptr, w_ptr, rows, cols, k_start, k_end, M, N, K, stride_xm, stride_xk, stride_wn, stride_wk,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """``x[rows, k_start:k_end] @ w[cols, k_start:k_end].T`` in fp32, with no scale applied yet."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        x = load_tile(x_ptr, rows, ks, M, K, stride_xm, stride_xk)
        # w read through its transpose, [BLOCK_K, BLOCK_N]: the dot's right operand, one byte an element from
        # memory. Every int8 value is exact in fp16, bf16 and fp32, so the conversion loses nothing.
        w = load_tile(w_ptr, ks, cols, K, N, stride_wk, stride_wn)
        acc = tl.dot(x, w.to(x.dtype), acc)
    return acc


@triton.jit
def scale_columns(acc, scale_ptr, cols, N, stride_s):
    # scale[n] is constant along K: one multiply per output element after the sum, not one per product.
    scale = tl.load(scale_ptr + cols * stride_s, mask=cols < N, other=0.0)
    return acc * scale[None, :]


# The backward's tiles: dx is [M, K], summed over N.
BWD_BLOCK_M, BWD_BLOCK_K, BWD_BLOCK_N = 64, 64, 32
BWD_WARPS, BWD_STAGES = 4, 4


@triton.jit
def _dx_kernel(
    dy_ptr, w_ptr, scale_ptr, dx_ptr, M, N, K,
    stride_dym, stride_dyn, stride_wn, stride_wk, stride_s, stride_dxm, stride_dxk,
    SPLIT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    ks = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        ns = n0 + tl.arange(0, BLOCK_N)
        dy = load_tile(dy_ptr, rows, ns, M, N, stride_dym, stride_dyn)
        # Here N is the summed dimension, so the scale cannot wait for the epilogue: it goes onto dy, in fp32.
        scale = tl.load(scale_ptr + ns * stride_s, mask=ns < N, other=0.0)
        scaled = dy.to(tl.float32) * scale[None, :]
        w = load_tile(w_ptr, ns, ks, N, K, stride_wn, stride_wk)
        # Rounding dy * scale to 16 bits would put a 16-bit error into every product; dot_split_lhs keeps it as
        # hi + lo, two dots against the exact int8 values.
        acc = dot_split_lhs(scaled, w.to(dy.dtype), acc, SPLIT)
    store_tile(dx_ptr, acc, rows, ks, M, K, stride_dxm, stride_dxk)


def dx_dequant_on_the_fly(inputs, out, grad_out):
    """``{"x": dy @ (w * scale[:, None])}``, the int8 weight dequantized tile by tile inside the kernel."""
    x, w, scale = inputs["x"], inputs["w"], inputs["scale"]
    dy = grad_out
    M, K = x.shape
    N = w.shape[0]
    dx = memory.empty((M, K), dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(M, BWD_BLOCK_M), triton.cdiv(K, BWD_BLOCK_K))
    _dx_kernel[grid](
        dy, w, scale, dx, M, N, K, *dy.stride(), *w.stride(), scale.stride(0), *dx.stride(),
        SPLIT=dy.dtype != torch.float32, BLOCK_M=BWD_BLOCK_M, BLOCK_K=BWD_BLOCK_K, BLOCK_N=BWD_BLOCK_N,
        num_warps=BWD_WARPS, num_stages=BWD_STAGES,
    )  # fmt: skip
    return {"x": dx}
