"""matmul, fused: the tiled matmul with the bias add and the activation (ReLU or erf GELU) applied to the fp32
tile before its one store; the backward reuses the kernel with the activation's derivative as its epilogue."""

import torch
import triton
import triton.language as tl

from kernels import memory
from kernels.dtypes import FLOATS
from kernels.registry import register
from variants.matmul._common import grouped_grid, grouped_tile, load_tile, store_tile

BLOCK_M, BLOCK_N, GROUP_M = 128, 128, 8
# K tiles as deep as four pipeline stages of shared memory allow: 64 for 16-bit operands, 32 for fp32.
BLOCK_K_16BIT, BLOCK_K_32BIT = 64, 32
NUM_WARPS, NUM_STAGES = 8, 4


@triton.jit
def _fused_kernel(
    a_ptr, b_ptr, c_ptr, bias_ptr, grad_ptr, M, N, K,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn, stride_bias,
    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, DACT: tl.constexpr, SPLIT_A: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        a = load_tile(a_ptr, rows, ks, M, K, stride_am, stride_ak)
        b = load_tile(b_ptr, ks, cols, K, N, stride_bk, stride_bn)
        if SPLIT_A:
            # a is an fp32 gradient, b 16-bit. Rounding a to b's dtype would cost da and db a digit; as the
            # sum hi + lo of two values in b's dtype it keeps twice the mantissa through two 16-bit dots.
            hi = a.to(b.dtype)
            acc = tl.dot(hi, b, acc)
            a = (a - hi.to(tl.float32)).to(b.dtype)
        acc = tl.dot(a, b, acc)
    # Epilogue math stays in fp32: one rounding, at the store.
    if HAS_BIAS:
        bias = tl.load(bias_ptr + cols * stride_bias, mask=cols < N, other=0.0)
        acc += bias.to(tl.float32)[None, :]
    if DACT:
        # acc is the pre-activation; grad_out has out's [M, N] shape and layout (both contiguous).
        grad = load_tile(grad_ptr, rows, cols, M, N, stride_cm, stride_cn).to(tl.float32)
        if ACTIVATION == "relu":
            acc = tl.where(acc > 0, grad, 0.0)
        elif ACTIVATION == "gelu":
            # GELU'(x) = Phi(x) + x * phi(x); 0.70710678... is 1/sqrt(2), 0.39894228... is 1/sqrt(2*pi).
            cdf = 0.5 * (1.0 + tl.math.erf(acc * 0.7071067811865476))
            pdf = tl.exp(-0.5 * acc * acc) * 0.3989422804014327
            acc = grad * (cdf + acc * pdf)
    elif ACTIVATION == "relu":
        acc = tl.maximum(acc, 0.0)
    elif ACTIVATION == "gelu":
        acc = 0.5 * acc * (1.0 + tl.math.erf(acc * 0.7071067811865476))
    store_tile(c_ptr, acc, rows, cols, M, N, stride_cm, stride_cn)


def _launch(a, b, out, bias=None, activation=None, grad=None):
    M, K = a.shape
    N = b.shape[1]
    block_k = BLOCK_K_16BIT if b.element_size() == 2 else BLOCK_K_32BIT
    _fused_kernel[grouped_grid(M, N)](
        a, b, out, bias, grad, M, N, K, *a.stride(), *b.stride(), *out.stride(),
        0 if bias is None else bias.stride(0),
        HAS_BIAS=bias is not None, ACTIVATION=activation or "none", DACT=grad is not None,
        SPLIT_A=a.dtype == torch.float32 and b.dtype != torch.float32,
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=block_k, GROUP_M=GROUP_M,
        num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )  # fmt: skip
    return out


def _backward(inputs, out, grad_out):
    a, b, bias, activation = inputs["a"], inputs["b"], inputs.get("bias"), inputs.get("activation")
    dpre = grad_out
    if activation is not None:
        # ReLU's derivative only masks grad_out, so dpre is exact in its dtype; GELU's is not, and rounding it
        # to 16 bits would put a 16-bit error into every term of da and db, so it stays fp32.
        dtype = grad_out.dtype if activation == "relu" else torch.float32
        dpre = memory.empty(grad_out.shape, dtype=dtype, device=grad_out.device)
        _launch(a, b, dpre, bias, activation, grad=grad_out)
    da = _launch(dpre, b.t(), memory.empty(a.shape, dtype=a.dtype, device=a.device))
    db = memory.empty(b.shape, dtype=b.dtype, device=b.device)
    # db^T = dpre^T @ a keeps dpre as the A operand, the one the kernel can split when it is fp32.
    _launch(dpre.t(), a, db.t())
    grads = {"a": da, "b": db}
    if bias is not None:
        grads["bias"] = dpre.float().sum(0).to(bias.dtype)
    return grads


@register(op="matmul", name="fused", version="1.0.0", dtypes=FLOATS, modes=("default", "epilogue"), backward=_backward)
def matmul_fused(a, b, *, out, bias=None, activation=None):
    """Tiled matmul with bias and ReLU/GELU fused into the epilogue; no extra pass over the output."""
    return _launch(a, b, out, bias, activation)
