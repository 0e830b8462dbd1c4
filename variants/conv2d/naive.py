"""conv2d, naive: the direct convolution, no tl.dot. Each program owns [BLOCK_M output pixels, BLOCK_N output
channels] and loops over input channel c, then tap (r, s), adding the outer product of one input value per pixel and
one weight per output channel in fp32: C*R*S rank-1 updates by vector FMAs.

Its backward is direct too: dx by the same loop over (k, r, s) on dy, keeping the taps whose output pixel exists
(h + pad - r * dilation a non-negative multiple of the stride); dweight for one tap and a tile of (k, c) by
sums of BLOCK_R-pixel products, in pixel order; dbias by a sum over pixels. Without tl.dot it runs bf16 in the
interpreter, where tl.dot does not (triton-lang/triton#11584), and is the plain reference kernel the others are
compared with."""

import triton
import triton.language as tl

from kernels import memory
from kernels.dtypes import FLOATS
from kernels.registry import register
from variants.conv2d._common import empty_like_layout, geometry, masked_grad

BLOCK_M, BLOCK_N = 32, 16
WGRAD_BLOCK_K, WGRAD_BLOCK_C, WGRAD_BLOCK_R = 16, 16, 16
BIAS_BLOCK_K, BIAS_BLOCK_R = 16, 64


@triton.jit
def _direct_kernel(
    x_ptr, w_ptr, bias_ptr, out_ptr, N, C, H, W, K, P, Q, R, S,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    s_xn, s_xc, s_xh, s_xw, s_wk, s_wc, s_wr, s_ws, s_on, s_ok, s_op, s_oq,
    HAS_BIAS: tl.constexpr, RELU: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    q = rows % Q
    p = (rows // Q) % P
    n = rows // (Q * P)
    row_ok = rows < N * P * Q
    col_ok = cols < K
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for c in range(0, C):
        for r in range(0, R):
            h = p * stride_h - pad_h + r * dil_h
            h_ok = row_ok & (h >= 0) & (h < H)
            for s in range(0, S):
                w = q * stride_w - pad_w + s * dil_w
                ok = h_ok & (w >= 0) & (w < W)
                xv = tl.load(x_ptr + n * s_xn + c * s_xc + h * s_xh + w * s_xw, mask=ok, other=0.0)
                wv = tl.load(w_ptr + cols * s_wk + c * s_wc + r * s_wr + s * s_ws, mask=col_ok, other=0.0)
                acc += xv.to(tl.float32)[:, None] * wv.to(tl.float32)[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    if RELU:
        acc = tl.maximum(acc, 0.0)
    offs = n[:, None] * s_on + cols[None, :] * s_ok + p[:, None] * s_op + q[:, None] * s_oq
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def _direct_dgrad_kernel(
    dy_ptr, out_ptr, w_ptr, dx_ptr, N, C, H, W, K, P, Q, R, S,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    s_dyn, s_dyk, s_dyp, s_dyq, s_on, s_ok, s_op, s_oq,
    s_wk, s_wc, s_wr, s_ws, s_dxn, s_dxc, s_dxh, s_dxw,
    RELU: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    # Rows are input pixels (n, h, w), columns input channels.
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    w_in = rows % W
    h_in = (rows // W) % H
    n = rows // (W * H)
    row_ok = rows < N * H * W
    col_ok = cols < C
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, K):
        for r in range(0, R):
            p_num = h_in + pad_h - r * dil_h
            p = p_num // stride_h
            p_ok = row_ok & (p_num >= 0) & (p_num % stride_h == 0) & (p < P)
            for s in range(0, S):
                q_num = w_in + pad_w - s * dil_w
                q = q_num // stride_w
                ok = p_ok & (q_num >= 0) & (q_num % stride_w == 0) & (q < Q)
                offs_dy = n * s_dyn + k * s_dyk + p * s_dyp + q * s_dyq
                offs_out = n * s_on + k * s_ok + p * s_op + q * s_oq
                dy = masked_grad(dy_ptr, out_ptr, offs_dy, offs_out, ok, RELU)
                wv = tl.load(w_ptr + k * s_wk + cols * s_wc + r * s_wr + s * s_ws, mask=col_ok, other=0.0)
                acc += dy[:, None] * wv.to(tl.float32)[None, :]
    offs = n[:, None] * s_dxn + cols[None, :] * s_dxc + h_in[:, None] * s_dxh + w_in[:, None] * s_dxw
    tl.store(dx_ptr + offs, acc.to(dx_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def _direct_wgrad_kernel(
    dy_ptr, out_ptr, x_ptr, dw_ptr, N, C, H, W, K, P, Q, S,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    s_dyn, s_dyk, s_dyp, s_dyq, s_on, s_ok, s_op, s_oq, s_xn, s_xc, s_xh, s_xw, s_wk, s_wc, s_wr, s_ws,
    RELU: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    # One tap (r, s) and a [BLOCK_K, BLOCK_C] tile of dweight, summed over all output pixels in order.
    ks = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    r = tl.program_id(2) // S
    s = tl.program_id(2) % S
    k_ok = ks < K
    c_ok = cs < C
    acc = tl.zeros((BLOCK_K, BLOCK_C), dtype=tl.float32)
    for m0 in range(0, N * P * Q, BLOCK_R):
        pix = m0 + tl.arange(0, BLOCK_R)
        q = pix % Q
        p = (pix // Q) % P
        n = pix // (Q * P)
        pix_ok = pix < N * P * Q
        offs_dy = n[:, None] * s_dyn + ks[None, :] * s_dyk + p[:, None] * s_dyp + q[:, None] * s_dyq
        offs_out = n[:, None] * s_on + ks[None, :] * s_ok + p[:, None] * s_op + q[:, None] * s_oq
        dy = masked_grad(dy_ptr, out_ptr, offs_dy, offs_out, pix_ok[:, None] & k_ok[None, :], RELU)
        h = p * stride_h - pad_h + r * dil_h
        w = q * stride_w - pad_w + s * dil_w
        x_ok = pix_ok & (h >= 0) & (h < H) & (w >= 0) & (w < W)
        x_offs = n[:, None] * s_xn + cs[None, :] * s_xc + h[:, None] * s_xh + w[:, None] * s_xw
        xv = tl.load(x_ptr + x_offs, mask=x_ok[:, None] & c_ok[None, :], other=0.0).to(tl.float32)
        # [BLOCK_R, BLOCK_K, 1] * [BLOCK_R, 1, BLOCK_C], summed over the pixels: products by FMA, not tl.dot.
        acc += tl.sum(dy[:, :, None] * xv[:, None, :], axis=0)
    offs = ks[:, None] * s_wk + cs[None, :] * s_wc + r * s_wr + s * s_ws
    tl.store(dw_ptr + offs, acc.to(dw_ptr.dtype.element_ty), mask=k_ok[:, None] & c_ok[None, :])


@triton.jit
def _direct_dbias_kernel(
    dy_ptr, out_ptr, db_ptr, N, K, P, Q, s_dyn, s_dyk, s_dyp, s_dyq, s_on, s_ok, s_op, s_oq,
    RELU: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    ks = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    k_ok = ks < K
    acc = tl.zeros((BLOCK_K,), dtype=tl.float32)
    for m0 in range(0, N * P * Q, BLOCK_R):
        pix = m0 + tl.arange(0, BLOCK_R)
        q = pix % Q
        p = (pix // Q) % P
        n = pix // (Q * P)
        mask = (pix < N * P * Q)[:, None] & k_ok[None, :]
        offs_dy = n[:, None] * s_dyn + ks[None, :] * s_dyk + p[:, None] * s_dyp + q[:, None] * s_dyq
        offs_out = n[:, None] * s_on + ks[None, :] * s_ok + p[:, None] * s_op + q[:, None] * s_oq
        acc += tl.sum(masked_grad(dy_ptr, out_ptr, offs_dy, offs_out, mask, RELU), axis=0)
    tl.store(db_ptr + ks, acc.to(db_ptr.dtype.element_ty), mask=k_ok)


def _backward(inputs, out, grad_out):
    x, weight, bias, relu = inputs["x"], inputs["weight"], inputs["bias"], inputs["relu"]
    g = geometry(x, weight, inputs["stride"], inputs["padding"], inputs["dilation"])
    dy = grad_out
    grads = {}
    if x.requires_grad:
        dx = empty_like_layout(x)
        grid = (triton.cdiv(g.N * g.H * g.W, BLOCK_M), triton.cdiv(g.C, BLOCK_N))
        _direct_dgrad_kernel[grid](
            dy, out, weight, dx, g.N, g.C, g.H, g.W, g.K, g.P, g.Q, g.R, g.S, *g.conv_args,
            *dy.stride(), *out.stride(), *weight.stride(), *dx.stride(),
            RELU=relu, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N,
        )  # fmt: skip
        grads["x"] = dx
    dw = empty_like_layout(weight)
    grid = (triton.cdiv(g.K, WGRAD_BLOCK_K), triton.cdiv(g.C, WGRAD_BLOCK_C), g.R * g.S)
    _direct_wgrad_kernel[grid](
        dy, out, x, dw, g.N, g.C, g.H, g.W, g.K, g.P, g.Q, g.S, *g.conv_args,
        *dy.stride(), *out.stride(), *x.stride(), *dw.stride(),
        RELU=relu, BLOCK_K=WGRAD_BLOCK_K, BLOCK_C=WGRAD_BLOCK_C, BLOCK_R=WGRAD_BLOCK_R,
    )  # fmt: skip
    grads["weight"] = dw
    if bias is not None:
        db = memory.empty((g.K,), dtype=bias.dtype, device=bias.device)
        _direct_dbias_kernel[(triton.cdiv(g.K, BIAS_BLOCK_K),)](
            dy, out, db, g.N, g.K, g.P, g.Q, *dy.stride(), *out.stride(),
            RELU=relu, BLOCK_K=BIAS_BLOCK_K, BLOCK_R=BIAS_BLOCK_R,
        )  # fmt: skip
        grads["bias"] = db
    return grads


@register(
    op="conv2d",
    name="naive",
    version="1.0.0",
    dtypes=FLOATS,
    modes=("nhwc", "nchw", "epilogue"),
    backward=_backward,
)
def conv2d_naive(x, weight, bias, stride, padding, dilation, groups, relu, *, out):
    """Direct convolution: C*R*S rank-1 FMA updates of each output tile in fp32, no tl.dot."""
    g = geometry(x, weight, stride, padding, dilation)
    grid = (triton.cdiv(g.N * g.P * g.Q, BLOCK_M), triton.cdiv(g.K, BLOCK_N))
    _direct_kernel[grid](
        x, weight, bias, out, g.N, g.C, g.H, g.W, g.K, g.P, g.Q, g.R, g.S, *g.conv_args,
        *x.stride(), *weight.stride(), *out.stride(),
        HAS_BIAS=bias is not None, RELU=relu, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N,
    )  # fmt: skip
    return out
