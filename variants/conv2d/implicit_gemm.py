"""conv2d, implicit_gemm: the convolution as a GEMM of [N*P*Q, C*R*S] x [C*R*S, K] without forming im2col. Each
program owns a [BLOCK_M output pixels, BLOCK_N output channels] tile and walks the flat C*R*S reduction in BLOCK_K
steps, decoding every reduction index into (r, s, c) and gathering its A tile from x by the input coordinates
h = p * stride - pad + r * dilation (and likewise w); taps that fall in the padding load as zeros. The reduction
runs c fastest, so on channels-last x a row of the A tile is BLOCK_K consecutive channels of one pixel: coalesced
on NHWC, strided by H*W on NCHW.

Fixed tiles and no epilogue: the fused variant adds the bias/ReLU epilogue, a per-tap loop that needs no per-element
division, and autotuning."""

import triton
import triton.language as tl

from kernels.dtypes import FLOATS
from kernels.registry import register
from variants.conv2d._common import geometry, implicit_gemm_backward

BLOCK_M, BLOCK_N, BLOCK_K = 64, 64, 32


@triton.jit
def _implicit_gemm_kernel(
    x_ptr, w_ptr, out_ptr, N, C, H, W, K, P, Q, R, S,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    s_xn, s_xc, s_xh, s_xw, s_wk, s_wc, s_wr, s_ws, s_on, s_ok, s_op, s_oq,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    q = rows % Q
    p = (rows // Q) % P
    n = rows // (Q * P)
    row_ok = rows < N * P * Q
    col_ok = cols < K
    h0 = p * stride_h - pad_h
    w0 = q * stride_w - pad_w
    CRS = C * R * S
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, CRS, BLOCK_K):
        red = k0 + tl.arange(0, BLOCK_K)
        red_ok = red < CRS
        c = red % C
        s = (red // C) % S
        r = red // (C * S)
        h = h0[:, None] + r[None, :] * dil_h
        w = w0[:, None] + s[None, :] * dil_w
        a_mask = row_ok[:, None] & red_ok[None, :] & (h >= 0) & (h < H) & (w >= 0) & (w < W)
        a = tl.load(x_ptr + n[:, None] * s_xn + c[None, :] * s_xc + h * s_xh + w * s_xw, mask=a_mask, other=0.0)
        b_offs = cols[None, :] * s_wk + c[:, None] * s_wc + r[:, None] * s_wr + s[:, None] * s_ws
        b = tl.load(w_ptr + b_offs, mask=red_ok[:, None] & col_ok[None, :], other=0.0)
        acc = tl.dot(a, b, acc)
    offs = n[:, None] * s_on + cols[None, :] * s_ok + p[:, None] * s_op + q[:, None] * s_oq
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


@register(
    op="conv2d",
    name="implicit_gemm",
    version="1.0.0",
    dtypes=FLOATS,
    modes=("nhwc", "nchw"),
    backward=implicit_gemm_backward,
)
def conv2d_implicit_gemm(x, weight, bias, stride, padding, dilation, groups, relu, *, out):
    """Implicit GEMM over a flat C*R*S reduction, A gathered from x per element; fixed tiles, no epilogue."""
    g = geometry(x, weight, stride, padding, dilation)
    grid = (triton.cdiv(g.N * g.P * g.Q, BLOCK_M), triton.cdiv(g.K, BLOCK_N))
    _implicit_gemm_kernel[grid](
        x, weight, out, g.N, g.C, g.H, g.W, g.K, g.P, g.Q, g.R, g.S, *g.conv_args,
        *x.stride(), *weight.stride(), *out.stride(),
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, num_warps=4, num_stages=3,
    )  # fmt: skip
    return out
