"""nf4_dequantize, fused: one pass, each code looked up in the 16-entry fp32 codebook, scaled by its block's absmax.
The codebook is loaded once a program and indexed with tl.gather, which Triton serves from shared memory; a load
from the table in global memory per value instead (through L1) ran about 4 points of copy bandwidth slower at every
config on an H200 (best 87.1 and 89.4 % against 90.5 and 93.3 % at 45 M and 67 M values; triton 3.6).

A program takes TILES tiles of BLOCKS NF4 blocks each. A tile is read as a flat run of BLOCKS * 32 packed bytes and
one absmax per block (broadcast over its 32 bytes); each byte's high and low nibble index the table, the two values
are scaled by the absmax and interleaved (high nibble first), and the tile's BLOCKS * 64 values are stored as one
flat run. Every tensor of a tile is 1-D, so the byte load, the lookups and the store can share one layout: with
BLOCKS = 4 * warps a thread holds 4 packed bytes and 8 values, one 4-byte load and one 16-byte store in bf16 or fp16;
with BLOCKS = 2 * warps, 2 bytes and 4 values, one 16-byte store in fp32. The next tile's loads are issued before
the current tile is stored, as the compiler may not move a load past a store that could alias it. Autotuned over
BLOCKS, TILES and warps.

Version 1.0.0 chose each value with a four-level select tree on the code's bits: about 23 ALU instructions a value
in its sm_90 code, against about 5 here, and it ran at about 40 % of copy bandwidth on an H200."""

import triton
import triton.language as tl

from kernels import backend
from kernels.dtypes import FLOATS
from kernels.ops.nf4_dequantize import NF4_BLOCK
from kernels.registry import register
from kernels.tuning import autotune
from variants.nf4_dequantize.naive import NO_BACKWARD, _codebook


def _config(blocks, tiles, warps):
    return triton.Config({"BLOCKS": blocks, "TILES": tiles}, num_warps=warps)


# BLOCKS = 4 * warps gives every thread 4 packed bytes of a tile, 8 values: one 16-byte store for bf16 and fp16.
# BLOCKS = 2 * warps gives it 2 bytes, 4 values: one 16-byte store for fp32. TILES amortizes a program's fixed
# work and keeps a second tile's load in flight. 1024 to 8192 values a program.
CONFIGS = [
    _config(16, 1, 4),
    _config(16, 2, 4),
    _config(16, 4, 4),
    _config(32, 2, 8),
    _config(32, 4, 8),
    _config(8, 4, 4),
]


def _interpreter_keeps_one(configs, named_args, **kwargs):
    # Under the interpreter a config is run, not timed: one is enough to test the kernel's code.
    return configs[:1] if backend.interpreting() else configs


@triton.jit
def _load_tile(packed_ptr, absmax_ptr, n, tile, NF4_BLOCK: tl.constexpr, BLOCKS: tl.constexpr):
    """The tile's packed bytes and, for each byte, its block's absmax; where the tile starts and how many of its
    bytes are in range."""
    HALF: tl.constexpr = NF4_BLOCK // 2
    BYTES: tl.constexpr = BLOCKS * HALF
    first_block = tile * BLOCKS
    first_byte = first_block * HALF
    # int64 offsets to the tile's start, int32 within it. n is even (the op refuses odd counts), so n // 2 bytes
    # hold every value; a tile past the end has bytes_left <= 0 and loads and stores nothing.
    bytes_left = tl.minimum(n // 2 - first_byte, BYTES).to(tl.int32)
    offs = tl.arange(0, BYTES)
    packed = tl.load(packed_ptr + first_byte + offs, mask=offs < bytes_left, other=0)
    # Block b of the tile exists when its first byte does (a last block may be short).
    block = tl.arange(0, BLOCKS)
    absmax = tl.load(absmax_ptr + first_block + block, mask=block * HALF < bytes_left, other=0.0)
    # One load per block, then broadcast to its bytes in the bytes' layout (a flat [BYTES] run).
    absmax = tl.reshape(tl.broadcast_to(absmax[:, None], (BLOCKS, HALF)), (BYTES,))
    return packed, absmax, first_byte, bytes_left


@triton.jit
def _store_tile(packed, absmax, first_byte, bytes_left, codebook, out_ptr, BYTES: tl.constexpr):
    # Masked-off bytes were loaded as 0: code 0, still inside the table, so the lookups need no mask.
    high = tl.gather(codebook, (packed >> 4).to(tl.int32), 0) * absmax
    low = tl.gather(codebook, (packed & 0xF).to(tl.int32), 0) * absmax
    # Value order: byte i's high nibble (value 2i), then its low nibble (value 2i + 1).
    values = tl.interleave(high, low)
    offs = tl.arange(0, 2 * BYTES)
    tl.store(out_ptr + 2 * first_byte + offs, values.to(out_ptr.dtype.element_ty), mask=offs < 2 * bytes_left)


@autotune(configs=CONFIGS, key=["n"], prune_configs_by={"early_config_prune": _interpreter_keeps_one})
@triton.jit
def _nf4_kernel(
    packed_ptr,
    absmax_ptr,
    codebook_ptr,
    out_ptr,
    n,
    NF4_BLOCK: tl.constexpr,
    BLOCKS: tl.constexpr,
    TILES: tl.constexpr,
):
    BYTES: tl.constexpr = BLOCKS * (NF4_BLOCK // 2)
    codebook = tl.load(codebook_ptr + tl.arange(0, 16))
    tile = tl.program_id(0).to(tl.int64) * TILES
    packed, absmax, first_byte, bytes_left = _load_tile(packed_ptr, absmax_ptr, n, tile, NF4_BLOCK, BLOCKS)
    for t in tl.static_range(1, TILES):
        # Load tile t before storing tile t - 1, so the two loads overlap.
        next_tile = _load_tile(packed_ptr, absmax_ptr, n, tile + t, NF4_BLOCK, BLOCKS)
        _store_tile(packed, absmax, first_byte, bytes_left, codebook, out_ptr, BYTES)
        packed, absmax, first_byte, bytes_left = next_tile
    _store_tile(packed, absmax, first_byte, bytes_left, codebook, out_ptr, BYTES)


@register(op="nf4_dequantize", name="fused", version="1.1.0", dtypes=FLOATS, no_backward=NO_BACKWARD)
def nf4_dequantize_fused(packed, absmax, shape, dtype, *, out):
    """One pass: each byte's two codes looked up in the codebook (held on chip), scaled by the block's absmax."""
    n = out.numel()
    _nf4_kernel[lambda meta: (triton.cdiv(triton.cdiv(n, NF4_BLOCK), meta["BLOCKS"] * meta["TILES"]),)](
        packed, absmax, _codebook(packed.device), out, n, NF4_BLOCK=NF4_BLOCK
    )
    return out
