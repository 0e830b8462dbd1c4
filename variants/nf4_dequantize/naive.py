"""nf4_dequantize, naive: two passes. An unpack kernel writes one uint8 code per value to scratch (high nibble
first); a lookup kernel reads the codes back, gathers each one's value from the 16-entry codebook in global memory,
and multiplies by its block's absmax (looked up per value)."""

import torch
import triton
import triton.language as tl

from kernels import memory
from kernels.dtypes import FLOATS
from kernels.ops.nf4_dequantize import NF4_BLOCK, NF4_CODEBOOK
from kernels.registry import register

BLOCK = 1024
NO_BACKWARD = "QLoRA freezes the 4-bit base weights: nothing trains through their dequantization"


@triton.jit
def _unpack_kernel(packed_ptr, codes_ptr, n_bytes, BLOCK: tl.constexpr):
    byte_idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = byte_idx < n_bytes
    byte = tl.load(packed_ptr + byte_idx, mask=mask, other=0)
    tl.store(codes_ptr + 2 * byte_idx, byte >> 4, mask=mask)
    tl.store(codes_ptr + 2 * byte_idx + 1, byte & 0xF, mask=mask)


@triton.jit
def _lookup_kernel(codes_ptr, codebook_ptr, absmax_ptr, out_ptr, n, NF4_BLOCK: tl.constexpr, BLOCK: tl.constexpr):
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < n
    code = tl.load(codes_ptr + idx, mask=mask, other=0)
    value = tl.load(codebook_ptr + code, mask=mask, other=0.0)
    absmax = tl.load(absmax_ptr + idx // NF4_BLOCK, mask=mask, other=0.0)
    tl.store(out_ptr + idx, (value * absmax).to(out_ptr.dtype.element_ty), mask=mask)


_CODEBOOKS: dict[torch.device, torch.Tensor] = {}


def _codebook(device: torch.device) -> torch.Tensor:
    if device not in _CODEBOOKS:
        _CODEBOOKS[device] = torch.tensor(NF4_CODEBOOK, dtype=torch.float32, device=device)
    return _CODEBOOKS[device]


@register(op="nf4_dequantize", name="naive", version="1.0.0", dtypes=FLOATS, no_backward=NO_BACKWARD)
def nf4_dequantize_naive(packed, absmax, shape, dtype, *, out):
    """Two passes: unpack nibbles to a uint8 code per value, then gather from the codebook in memory and scale."""
    n = out.numel()
    codes = memory.empty((n,), dtype=torch.uint8, device=packed.device)
    _unpack_kernel[(triton.cdiv(n // 2, BLOCK),)](packed, codes, n // 2, BLOCK=BLOCK)
    _lookup_kernel[(triton.cdiv(n, BLOCK),)](
        codes, _codebook(packed.device), absmax, out, n, NF4_BLOCK=NF4_BLOCK, BLOCK=BLOCK
    )
    return out
