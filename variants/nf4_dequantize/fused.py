"""nf4_dequantize, fused: one pass with the codebook in registers. A program takes BLOCKS NF4 blocks as a
[BLOCKS, 32]-byte tile, splits each byte's nibbles, turns each code into its value with a four-level select tree
on its bits (fifteen selects between constants: no table in memory), multiplies by the tile row's absmax, and
interleaves the two nibbles' values into [BLOCKS, 64] outputs in value order. Autotuned over BLOCKS and warps."""

import triton
import triton.language as tl

from kernels import backend
from kernels.dtypes import FLOATS
from kernels.ops.nf4_dequantize import NF4_BLOCK
from kernels.registry import register
from kernels.tuning import autotune
from variants.nf4_dequantize.naive import NO_BACKWARD


@triton.jit
def _nf4_value(code):
    # The NF4 codebook of kernels/ops/nf4_dequantize.py (QLoRA, Appendix E), selected by the code's bits from the
    # lowest up: bit 0 picks within pairs, bit 1 within quads, bit 2 within halves, bit 3 the sign side.
    bit0 = (code & 1) != 0
    v01 = tl.where(bit0, -0.6961928009986877, -1.0)
    v23 = tl.where(bit0, -0.39491748809814453, -0.5250730514526367)
    v45 = tl.where(bit0, -0.18477343022823334, -0.28444138169288635)
    v67 = tl.where(bit0, 0.0, -0.09105003625154495)
    v89 = tl.where(bit0, 0.16093020141124725, 0.07958029955625534)
    v1011 = tl.where(bit0, 0.33791524171829224, 0.24611230194568634)
    v1213 = tl.where(bit0, 0.5626170039176941, 0.44070982933044434)
    v1415 = tl.where(bit0, 1.0, 0.7229568362236023)
    bit1 = (code & 2) != 0
    v0_3 = tl.where(bit1, v23, v01)
    v4_7 = tl.where(bit1, v67, v45)
    v8_11 = tl.where(bit1, v1011, v89)
    v12_15 = tl.where(bit1, v1415, v1213)
    bit2 = (code & 4) != 0
    v0_7 = tl.where(bit2, v4_7, v0_3)
    v8_15 = tl.where(bit2, v12_15, v8_11)
    return tl.where((code & 8) != 0, v8_15, v0_7)


def _config(blocks, warps):
    return triton.Config({"BLOCKS": blocks}, num_warps=warps)


# 1024 to 8192 values a program.
CONFIGS = [_config(16, 4), _config(32, 4), _config(64, 8), _config(128, 8)]


def _interpreter_keeps_one(configs, named_args, **kwargs):
    # Under the interpreter a config is run, not timed: one is enough to test the kernel's code.
    return configs[:1] if backend.interpreting() else configs


@autotune(configs=CONFIGS, key=["n"], prune_configs_by={"early_config_prune": _interpreter_keeps_one})
@triton.jit
def _nf4_kernel(packed_ptr, absmax_ptr, out_ptr, n, NF4_BLOCK: tl.constexpr, BLOCKS: tl.constexpr):
    HALF: tl.constexpr = NF4_BLOCK // 2
    block = tl.program_id(0) * BLOCKS + tl.arange(0, BLOCKS)
    n_blocks = tl.cdiv(n, NF4_BLOCK)
    byte_idx = block[:, None].to(tl.int64) * HALF + tl.arange(0, HALF)[None, :]
    byte = tl.load(packed_ptr + byte_idx, mask=byte_idx < n // 2, other=0)
    absmax = tl.load(absmax_ptr + block, mask=block < n_blocks, other=0.0)[:, None]
    high = _nf4_value(byte >> 4) * absmax
    low = _nf4_value(byte & 0xF) * absmax
    # [BLOCKS, 64] in value order: high nibble of byte i, then its low nibble.
    values = tl.interleave(high, low)
    out_idx = block[:, None].to(tl.int64) * NF4_BLOCK + tl.arange(0, NF4_BLOCK)[None, :]
    tl.store(out_ptr + out_idx, values.to(out_ptr.dtype.element_ty), mask=out_idx < n)


@register(op="nf4_dequantize", name="fused", version="1.0.0", dtypes=FLOATS, no_backward=NO_BACKWARD)
def nf4_dequantize_fused(packed, absmax, shape, dtype, *, out):
    """One pass: nibbles to values through a select tree in registers, scaled per block and interleaved."""
    n = out.numel()
    _nf4_kernel[lambda meta: (triton.cdiv(triton.cdiv(n, NF4_BLOCK), meta["BLOCKS"]),)](
        packed, absmax, out, n, NF4_BLOCK=NF4_BLOCK
    )
    return out
