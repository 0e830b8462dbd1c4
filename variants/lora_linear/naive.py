"""lora_linear, naive: three GEMM launches, as a framework calling a BLAS three times would make them: the down
projection x @ a.T, the base GEMM x @ w.T, then the up projection scale * (x @ a.T) @ b.T added onto the base.

Unlike three cuBLAS calls in bf16, the two intermediates stay in fp32 scratch, so the result is rounded once: a
16-bit x @ a.T or base result would carry its rounding error into elements where base and adapter cancel."""

import torch

from kernels import memory
from kernels.dtypes import FLOATS
from kernels.registry import register
from variants.lora_linear._common import MAX_RANK_TILE, gemm, lora_backward, lowrank, rank_block


def _dx_unfused(dy, w, b, a, t, scale, dx):
    # dx = dy @ w, then + scale * t @ a in a second launch: the same two-step shape as the forward.
    base = gemm(dy, w, memory.empty(dx.shape, dtype=torch.float32, device=dx.device))
    return gemm(t, a, dx, alpha=scale, addend=base, block_k=min(rank_block(a.shape[0]), MAX_RANK_TILE))


def _backward(inputs, out, grad_out):
    return lora_backward(inputs, grad_out, _dx_unfused)


@register(op="lora_linear", name="naive", version="1.0.0", dtypes=FLOATS, backward=_backward)
def lora_linear_naive(x, w, a, b, scale, *, out):
    """Three separate tiled GEMMs (down projection, base, up projection onto the base) with fp32 intermediates."""
    M, N, rank = x.shape[0], w.shape[0], a.shape[0]
    xa = lowrank(x, a.t(), memory.empty((M, rank), dtype=torch.float32, device=x.device), rank_dim=1)
    base = gemm(x, w.t(), memory.empty((M, N), dtype=torch.float32, device=x.device))
    return gemm(xa, b.t(), out, alpha=scale, addend=base, block_k=min(rank_block(rank), MAX_RANK_TILE))
