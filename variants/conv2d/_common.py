"""Pieces the conv2d variants share: the geometry of a call, layout-keeping scratch, fused's forward tile loop and
epilogue (which splitk runs too), and the implicit-GEMM backward (dgrad, and a deterministic split wgrad with dbias)
that implicit_gemm, fused and splitk use.

An underscore module: it registers nothing.
"""

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kernels import memory
from kernels.ops.conv2d import output_size, pair

# Tiles of the backward GEMMs. dgrad: rows are input pixels (n, h, w), columns input channels, the reduction runs
# over (r, s, k). wgrad: rows are output channels, columns input channels of one (r, s), the reduction over
# output pixels (n, p, q), split into chunks that are summed in a fixed order afterwards.
DGRAD_BLOCK_M, DGRAD_BLOCK_N, DGRAD_BLOCK_K = 64, 64, 32
WGRAD_BLOCK_M, WGRAD_BLOCK_N, WGRAD_BLOCK_R = 64, 64, 32
# wgrad has few output tiles (K x C x R x S is small) and a long reduction: enough chunks to fill an H100 twice.
WGRAD_TARGET_PROGRAMS = 264
REDUCE_BLOCK = 256


@dataclass(frozen=True)
class Geometry:
    N: int
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    P: int
    Q: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]

    @property
    def conv_args(self) -> tuple[int, ...]:
        """stride_h, stride_w, pad_h, pad_w, dil_h, dil_w: the order every kernel here takes them in."""
        return (*self.stride, *self.padding, *self.dilation)


def geometry(x, weight, stride, padding, dilation) -> Geometry:
    N, C, H, W = x.shape
    K, _, R, S = weight.shape
    P, Q = output_size(x, weight, stride, padding, dilation)
    return Geometry(N, C, H, W, K, R, S, P, Q, pair(stride), pair(padding), pair(dilation))


def empty_like_layout(t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """An uninitialized tensor with t's shape and memory format (channels-last stays channels-last), poisoned
    with NaN under the correctness suite like every ``memory.empty`` buffer."""
    out = torch.empty_like(t, dtype=dtype or t.dtype, memory_format=torch.preserve_format)
    return memory.poison_(out) if memory.poisoning() else out


@triton.jit
def output_pixels(rows, cols, N, K, P, Q):
    """``(n, p, q, row_ok, col_ok)``: the image and output position of each GEMM row (an output pixel, q fastest)
    and which rows and output-channel columns exist."""
    q = rows % Q
    p = (rows // Q) % P
    n = rows // (Q * P)
    return n, p, q, rows < N * P * Q, cols < K


@triton.jit
def tile_partial_sum(
    x_ptr, w_ptr, rows, cols, first_step, end_step, N, C, H, W, K, P, Q,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, s_xn, s_xc, s_xh, s_xw, s_wk, s_wc, s_wr, s_ws,
    S: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """The fp32 [BLOCK_M output pixels, BLOCK_N output channels] tile of the implicit GEMM [N*P*Q, C*R*S] x
    [C*R*S, K], summed over reduction steps first_step .. end_step - 1 of R * S * cdiv(C, BLOCK_K): step `it` is
    tap it // cdiv(C, BLOCK_K) (r, s in row-major order) and the BLOCK_K channels from (it % cdiv(C, BLOCK_K)) *
    BLOCK_K. fused sums every step; splitk sums one slice of them per program."""
    # A tap's input coordinates are computed once per row, not per element, and on channels-last x each A row is
    # BLOCK_K consecutive channels of one pixel.
    n, p, q, row_ok, col_ok = output_pixels(rows, cols, N, K, P, Q)
    h0 = p * stride_h - pad_h
    w0 = q * stride_w - pad_w
    x_rows = x_ptr + n * s_xn
    w_cols = w_ptr + cols * s_wk
    c_steps = tl.cdiv(C, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # One flat loop over (tap, channel block), so Triton pipelines the whole reduction: a loop over channels nested
    # in loops over taps would pipeline only C / BLOCK_K steps (one for a 64-channel layer).
    for it in range(first_step, end_step):
        rs = it // c_steps
        c0 = (it % c_steps) * BLOCK_K
        r = rs // S
        s = rs % S
        h = h0 + r * dil_h
        w = w0 + s * dil_w
        pix_ok = row_ok & (h >= 0) & (h < H) & (w >= 0) & (w < W)
        # Channels past C load as zeros, so C need not divide by BLOCK_K.
        cs = c0 + tl.arange(0, BLOCK_K)
        c_ok = cs < C
        a = tl.load(
            (x_rows + h * s_xh + w * s_xw)[:, None] + cs[None, :] * s_xc,
            mask=pix_ok[:, None] & c_ok[None, :],
            other=0.0,
        )
        b = tl.load(
            (w_cols + r * s_wr + s * s_ws)[None, :] + cs[:, None] * s_wc,
            mask=c_ok[:, None] & col_ok[None, :],
            other=0.0,
        )
        acc = tl.dot(a, b, acc)
    return acc


@triton.jit
def store_output_tile(
    out_ptr, bias_ptr, acc, rows, cols, N, K, P, Q, s_on, s_ok, s_op, s_oq,
    HAS_BIAS: tl.constexpr, RELU: tl.constexpr,
):  # fmt: skip
    """The epilogue of an fp32 [output pixels, output channels] tile: the bias, then the ReLU, rounded once at the
    store, in out's own strides (channels-last for channels-last x)."""
    n, p, q, row_ok, col_ok = output_pixels(rows, cols, N, K, P, Q)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    if RELU:
        acc = tl.maximum(acc, 0.0)
    offs = n[:, None] * s_on + cols[None, :] * s_ok + p[:, None] * s_op + q[:, None] * s_oq
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def masked_grad(dy_ptr, out_ptr, offs_dy, offs_out, mask, RELU: tl.constexpr):
    """dy as fp32, zero where mask is off or, with RELU, where the forward's output is not positive: ReLU's
    gradient taken from its output, so it needs no saved pre-activation."""
    dy = tl.load(dy_ptr + offs_dy, mask=mask, other=0.0).to(tl.float32)
    if RELU:
        y = tl.load(out_ptr + offs_out, mask=mask, other=0.0).to(tl.float32)
        dy = tl.where(y > 0, dy, 0.0)
    return dy


@triton.jit
def _dgrad_kernel(
    dy_ptr, out_ptr, w_ptr, dx_ptr, N, C, H, W, K, P, Q,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    s_dyn, s_dyk, s_dyp, s_dyq, s_on, s_ok, s_op, s_oq,
    s_wk, s_wc, s_wr, s_ws, s_dxn, s_dxc, s_dxh, s_dxw,
    R: tl.constexpr, S: tl.constexpr, RELU: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    # dx[n, c, h, w] = sum over (r, s, k) of dy[n, k, p, q] * w[k, c, r, s], where h = p * stride - pad + r * dil:
    # a GEMM of [N*H*W, R*S*K] x [R*S*K, C] whose left operand is gathered from dy. Tap (r, s) reaches input row
    # h only when h + pad - r * dil is a non-negative multiple of the stride.
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    w_in = rows % W
    h_in = (rows // W) % H
    n = rows // (W * H)
    row_ok = rows < N * H * W
    col_ok = cols < C
    k_steps = tl.cdiv(K, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # One flat loop over (r, s, k-block), so the compiler pipelines the whole reduction, not a few k steps.
    for it in range(0, R * S * k_steps):
        rs = it // k_steps
        k0 = (it % k_steps) * BLOCK_K
        r = rs // S
        s = rs % S
        p_num = h_in + pad_h - r * dil_h
        q_num = w_in + pad_w - s * dil_w
        p = p_num // stride_h
        q = q_num // stride_w
        ok = row_ok & (p_num >= 0) & (q_num >= 0) & (p_num % stride_h == 0) & (q_num % stride_w == 0)
        ok = ok & (p < P) & (q < Q)
        ks = k0 + tl.arange(0, BLOCK_K)
        mask = ok[:, None] & (ks[None, :] < K)
        offs_dy = n[:, None] * s_dyn + ks[None, :] * s_dyk + p[:, None] * s_dyp + q[:, None] * s_dyq
        offs_out = n[:, None] * s_on + ks[None, :] * s_ok + p[:, None] * s_op + q[:, None] * s_oq
        dy = masked_grad(dy_ptr, out_ptr, offs_dy, offs_out, mask, RELU)
        w_mask = (ks[:, None] < K) & col_ok[None, :]
        w = tl.load(w_ptr + ks[:, None] * s_wk + cols[None, :] * s_wc + r * s_wr + s * s_ws, mask=w_mask, other=0.0)
        acc = tl.dot(dy.to(w.dtype), w, acc)
    offs = n[:, None] * s_dxn + cols[None, :] * s_dxc + h_in[:, None] * s_dxh + w_in[:, None] * s_dxw
    tl.store(dx_ptr + offs, acc.to(dx_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def _wgrad_partial_kernel(
    dy_ptr, out_ptr, x_ptr, part_ptr, bias_part_ptr, N, C, H, W, K, P, Q, chunk,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    s_dyn, s_dyk, s_dyp, s_dyq, s_on, s_ok, s_op, s_oq, s_xn, s_xc, s_xh, s_xw,
    R: tl.constexpr, S: tl.constexpr, RELU: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    # dweight[k, c, r, s] = sum over output pixels (n, p, q) of dy[n, k, p, q] * x[n, c, h, w]: for one tap (r, s),
    # a GEMM of [K, N*P*Q] x [N*P*Q, C]. Program (i, j, split) sums chunk `split` of the output pixels into an fp32
    # partial; the partials are added in split order afterwards, never by atomics, so the result is bitwise
    # repeatable.
    c_tiles = tl.cdiv(C, BLOCK_N)
    rs = tl.program_id(1) // c_tiles
    r = rs // S
    s = rs % S
    split = tl.program_id(2)
    ks = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cs = (tl.program_id(1) % c_tiles) * BLOCK_N + tl.arange(0, BLOCK_N)
    k_ok = ks < K
    c_ok = cs < C
    M = N * P * Q
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    bias_acc = tl.zeros((BLOCK_M,), dtype=tl.float32)
    start = split * chunk
    for m0 in range(start, tl.minimum(start + chunk, M), BLOCK_R):
        pix = m0 + tl.arange(0, BLOCK_R)
        q = pix % Q
        p = (pix // Q) % P
        n = pix // (Q * P)
        pix_ok = pix < tl.minimum(start + chunk, M)
        mask = k_ok[:, None] & pix_ok[None, :]
        offs_dy = ks[:, None] * s_dyk + n[None, :] * s_dyn + p[None, :] * s_dyp + q[None, :] * s_dyq
        offs_out = ks[:, None] * s_ok + n[None, :] * s_on + p[None, :] * s_op + q[None, :] * s_oq
        dy_t = masked_grad(dy_ptr, out_ptr, offs_dy, offs_out, mask, RELU)
        h = p * stride_h - pad_h + r * dil_h
        w = q * stride_w - pad_w + s * dil_w
        x_ok = pix_ok & (h >= 0) & (h < H) & (w >= 0) & (w < W)
        x_offs = n[:, None] * s_xn + cs[None, :] * s_xc + h[:, None] * s_xh + w[:, None] * s_xw
        xs = tl.load(x_ptr + x_offs, mask=x_ok[:, None] & c_ok[None, :], other=0.0)
        acc = tl.dot(dy_t.to(xs.dtype), xs, acc)
        if HAS_BIAS:
            bias_acc += tl.sum(dy_t, axis=1)
    # Partials are [split, K, C, R, S], contiguous: the reduction then walks weight's logical order.
    KCRS = K * C * R * S
    offs = split * KCRS + ks[:, None] * (C * R * S) + cs[None, :] * (R * S) + r * S + s
    tl.store(part_ptr + offs, acc, mask=k_ok[:, None] & c_ok[None, :])
    # A compile-time branch, then a run-time one: Triton cannot join a constexpr and a tensor with `and`.
    if HAS_BIAS:  # noqa: SIM102
        # Every (r, s, c-tile) program sees the same dy; the first one writes dbias's partial.
        if tl.program_id(1) == 0:
            tl.store(bias_part_ptr + split * K + ks, bias_acc, mask=k_ok)


@triton.jit
def _reduce_splits_kernel(
    part_ptr, out_ptr, splits, K, C, R, S, s_ok, s_oc, s_or, s_os, BLOCK: tl.constexpr
):  # fmt: skip
    # out[k, c, r, s] = sum of the [splits, K, C, R, S] fp32 partials over splits, in split order, rounded once.
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    total = K * C * R * S
    ok = offs < total
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for i in range(0, splits):
        acc += tl.load(part_ptr + i * total + offs, mask=ok, other=0.0)
    s = offs % S
    r = (offs // S) % R
    c = (offs // (S * R)) % C
    k = offs // (S * R * C)
    tl.store(out_ptr + k * s_ok + c * s_oc + r * s_or + s * s_os, acc.to(out_ptr.dtype.element_ty), mask=ok)


def _reduce(part, out, splits, dims, strides):
    K, C, R, S = dims
    grid = (triton.cdiv(K * C * R * S, REDUCE_BLOCK),)
    _reduce_splits_kernel[grid](part, out, splits, K, C, R, S, *strides, BLOCK=REDUCE_BLOCK)
    return out


def wgrad_splits(g: Geometry) -> tuple[int, int]:
    """(splits, chunk): how many chunks of output pixels wgrad sums separately, and how many pixels each holds (a
    multiple of WGRAD_BLOCK_R). Only the shape decides, so the reduction order, and the result, never varies."""
    M = g.N * g.P * g.Q
    tiles = triton.cdiv(g.K, WGRAD_BLOCK_M) * g.R * g.S * triton.cdiv(g.C, WGRAD_BLOCK_N)
    wanted = max(1, min(WGRAD_TARGET_PROGRAMS // tiles, triton.cdiv(M, WGRAD_BLOCK_R)))
    chunk = triton.cdiv(triton.cdiv(M, wanted), WGRAD_BLOCK_R) * WGRAD_BLOCK_R
    return triton.cdiv(M, chunk), chunk


def implicit_gemm_backward(inputs, out, grad_out):
    """dx, dweight and dbias of ``relu?(conv2d(x, weight) + bias)`` by implicit GEMMs with fp32 accumulation:
    dx only when x needs it (a network's first layer does not); dweight and dbias from one deterministic pass."""
    x, weight, bias, relu = inputs["x"], inputs["weight"], inputs["bias"], inputs["relu"]
    g = geometry(x, weight, inputs["stride"], inputs["padding"], inputs["dilation"])
    dy = grad_out
    grads = {}
    if x.requires_grad:
        dx = empty_like_layout(x)
        grid = (triton.cdiv(g.N * g.H * g.W, DGRAD_BLOCK_M), triton.cdiv(g.C, DGRAD_BLOCK_N))
        _dgrad_kernel[grid](
            dy, out, weight, dx, g.N, g.C, g.H, g.W, g.K, g.P, g.Q, *g.conv_args,
            *dy.stride(), *out.stride(), *weight.stride(), *dx.stride(),
            R=g.R, S=g.S, RELU=relu, BLOCK_M=DGRAD_BLOCK_M, BLOCK_N=DGRAD_BLOCK_N, BLOCK_K=DGRAD_BLOCK_K,
        )  # fmt: skip
        grads["x"] = dx
    splits, chunk = wgrad_splits(g)
    part = memory.empty((splits, g.K, g.C, g.R, g.S), dtype=torch.float32, device=x.device)
    has_bias = bias is not None
    bias_part = memory.empty((splits, g.K), dtype=torch.float32, device=x.device) if has_bias else part
    grid = (triton.cdiv(g.K, WGRAD_BLOCK_M), g.R * g.S * triton.cdiv(g.C, WGRAD_BLOCK_N), splits)
    _wgrad_partial_kernel[grid](
        dy, out, x, part, bias_part, g.N, g.C, g.H, g.W, g.K, g.P, g.Q, chunk, *g.conv_args,
        *dy.stride(), *out.stride(), *x.stride(),
        R=g.R, S=g.S, RELU=relu, HAS_BIAS=has_bias,
        BLOCK_M=WGRAD_BLOCK_M, BLOCK_N=WGRAD_BLOCK_N, BLOCK_R=WGRAD_BLOCK_R,
    )  # fmt: skip
    grads["weight"] = _reduce(part, empty_like_layout(weight), splits, (g.K, g.C, g.R, g.S), weight.stride())
    if has_bias:
        db = memory.empty((g.K,), dtype=bias.dtype, device=bias.device)
        grads["bias"] = _reduce(bias_part, db, splits, (g.K, 1, 1, 1), (db.stride(0), 0, 0, 0))
    return grads
