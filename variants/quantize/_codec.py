"""What the quantize and dequantize variants share: the tiles of their 2-D kernels, absmax as an integer max, the
scale, and the int8 and fp8 encoders and decoders, in integer bit arithmetic on fp32 values.

Why bits and not ``.to(tl.float8e4nv)``: Triton's interpreter rounds float -> fp8 casts wrongly (ties away from
zero, a lost carry: https://github.com/triton-lang/triton/issues/8322) and its fp8 -> fp32 cast reads the NaN and
inf codes as numbers, and NVIDIA's own software conversion paths have had rounding bugs
(https://github.com/triton-lang/triton/pull/11753). The encoders below are exact on both backends. They cost about
ten integer operations per element, far below what a memory-bound kernel has to spare on a GPU.

An underscore module: it registers nothing.
"""

import triton
import triton.language as tl

from kernels import backend

# Format codes for the kernels' FORMAT constexpr.
INT8 = tl.constexpr(0)
E4M3 = tl.constexpr(1)
E5M2 = tl.constexpr(2)
FORMAT_CODE = {"int8": 0, "e4m3": 1, "e5m2": 2}
GRANULARITY_CODE = {"tensor": 0, "row": 1, "block": 2}
TENSOR = tl.constexpr(0)
ROW = tl.constexpr(1)
BLOCK = tl.constexpr(2)
BLOCK_SCALE_COLS = 128
# fp32's smallest normal number, the smallest scale.
MIN_SCALE = tl.constexpr(2.0**-126)


# -- tiles of the 2-D kernels (quantize and dequantize) ------------------------------------------------------------
def _config(block_rows, block_cols, warps):
    return triton.Config({"BLOCK_ROWS": block_rows, "BLOCK_COLS": block_cols}, num_warps=warps)


# Tiles of 2K to 16K elements. Block scales need BLOCK_COLS = 128 (one scale per tile row); the tensor-scale
# kernels may also take wider tiles.
TILE_CONFIGS = [
    _config(32, 128, 4),
    _config(64, 128, 8),
    _config(128, 128, 8),
    _config(16, 128, 4),
    _config(8, 512, 4),
    _config(16, 512, 8),
    _config(8, 1024, 8),
]


def prune_tiles(configs, named_args, **kwargs):
    if kwargs.get("GRANULARITY", named_args.get("GRANULARITY")) == GRANULARITY_CODE["block"]:
        configs = [c for c in configs if c.kwargs["BLOCK_COLS"] == BLOCK_SCALE_COLS]
    # Under the interpreter a config is run, not timed: one is enough to test the kernel's code.
    return configs[:1] if backend.interpreting() else configs


def tile_grid(meta, rows, cols):
    return (triton.cdiv(rows, meta["BLOCK_ROWS"]), triton.cdiv(cols, meta["BLOCK_COLS"]))


# -- arithmetic -----------------------------------------------------------------------------------------------------


@triton.jit
def abs_bits(x):
    """|x| as the int32 of its fp32 bits. Non-negative floats order as their bits do, and a NaN's bits exceed
    inf's, so an integer max of these is a NaN-propagating absmax (a float max on the GPU drops NaN)."""
    return x.to(tl.float32).to(tl.int32, bitcast=True) & 0x7FFFFFFF


@triton.jit
def scale_of(absmax_bits, FORMAT: tl.constexpr):
    """max(fp32(absmax / FMAX), 2**-126), the division IEEE-rounded (``/`` may be approximate on the GPU). The floor
    keeps every scale a normal number with a finite reciprocal (an all-zero group gets it and codes 0); a NaN or
    inf absmax passes through, since comparisons with NaN are false."""
    absmax = absmax_bits.to(tl.float32, bitcast=True)
    if FORMAT == INT8:
        fmax = tl.full(absmax.shape, 127.0, tl.float32)
    elif FORMAT == E4M3:
        fmax = tl.full(absmax.shape, 448.0, tl.float32)
    else:
        fmax = tl.full(absmax.shape, 57344.0, tl.float32)
    scale = tl.math.div_rn(absmax, fmax)
    return tl.where(scale < MIN_SCALE, MIN_SCALE, scale)


@triton.jit
def inverse(scale):
    """fp32(1 / scale), IEEE-rounded: one division per group, so each element then costs one multiply."""
    return tl.math.div_rn(tl.full(scale.shape, 1.0, tl.float32), scale)


@triton.jit
def _encode_fp8(v, MBITS: tl.constexpr, BIAS: tl.constexpr, MIN_NORMAL: tl.constexpr, MAGIC: tl.constexpr,
                MAGIC_BITS: tl.constexpr, FMAX: tl.constexpr):  # fmt: skip
    SHIFT: tl.constexpr = 23 - MBITS
    sign = ((v.to(tl.int32, bitcast=True) >> 31) & 1) << 7
    mag = tl.minimum(tl.abs(v), FMAX)
    bits = mag.to(tl.int32, bitcast=True)
    # Normal: round the 23-bit mantissa to MBITS bits, to nearest even (add half a step less one, plus the kept
    # lowest bit); a carry out of the mantissa moves into the exponent, as it should. Then rebias the exponent.
    normal = ((bits + ((1 << (SHIFT - 1)) - 1) + ((bits >> SHIFT) & 1)) >> SHIFT) - ((127 - BIAS) << MBITS)
    # Subnormal: MAGIC is the power of two where fp32's step is the format's subnormal step, so the add rounds mag
    # to a multiple of that step (to nearest even) and the low bits of the sum count the steps. 2**MBITS steps is
    # the smallest normal's code, as it should be.
    subnormal = (mag + MAGIC).to(tl.int32, bitcast=True) - MAGIC_BITS
    code = tl.where(mag < MIN_NORMAL, subnormal, normal) | sign
    # A NaN's magnitude is whatever tl.minimum made of it: replace the code outright.
    return tl.where(v != v, 0x7F, code)


@triton.jit
def encode(v, FORMAT: tl.constexpr):
    """fp32 ``v`` -> int32 code: the int8 value in [-127, 127], or the fp8 byte in 0..255. Rounds to nearest even and
    saturates; NaN becomes 0 (int8) or 0x7F (fp8)."""
    if FORMAT == INT8:
        r = tl.minimum(tl.maximum(v, -127.0), 127.0)
        # Adding 1.5 * 2**23 puts the sum in [2**23, 2**24), where fp32's step is 1: the add itself rounds to an
        # integer, to nearest even, and the sum's low bits are that integer offset by 2**22.
        code = (r + 12582912.0).to(tl.int32, bitcast=True) - 0x4B400000
        return tl.where(v != v, 0, code)
    elif FORMAT == E4M3:
        # Subnormal step 2**-9, found at 2**14 in fp32 (bits 0x46800000); smallest normal 2**-6.
        return _encode_fp8(v, 3, 7, 0.015625, 16384.0, 0x46800000, 448.0)
    else:
        # Subnormal step 2**-16, found at 2**7 in fp32 (bits 0x43000000); smallest normal 2**-14.
        return _encode_fp8(v, 2, 15, 0.00006103515625, 128.0, 0x43000000, 57344.0)


@triton.jit
def _decode_fp8(code, MBITS: tl.constexpr, BIAS: tl.constexpr, SUBNORMAL_STEP: tl.constexpr, HAS_INF: tl.constexpr):
    byte = code & 0xFF
    mag_code = byte & 0x7F
    exponent = mag_code >> MBITS
    normal = ((mag_code << (23 - MBITS)) + ((127 - BIAS) << 23)).to(tl.float32, bitcast=True)
    subnormal = (mag_code & ((1 << MBITS) - 1)).to(tl.float32) * SUBNORMAL_STEP
    mag = tl.where(exponent == 0, subnormal, normal)
    if HAS_INF:
        # e5m2 is IEEE-like: the top exponent is inf with a zero mantissa, NaN otherwise.
        special = tl.where((mag_code & ((1 << MBITS) - 1)) == 0, float("inf"), float("nan"))
        mag = tl.where(exponent == (1 << (7 - MBITS)) - 1, special, mag)
    else:
        # e4m3fn has no infinities: only S.1111.111 is NaN.
        mag = tl.where(mag_code == 0x7F, float("nan"), mag)
    # The sign goes on as a bit, not as -mag: Triton lowers negation to 0 - x in some releases (3.6's interpreter),
    # which turns the code for -0.0 into +0.0.
    return (mag.to(tl.int32, bitcast=True) | ((byte & 0x80) << 24)).to(tl.float32, bitcast=True)


@triton.jit
def decode(code, FORMAT: tl.constexpr):
    """int32 code (the value loaded from a q tensor, fp8 bytes read as uint8) -> its exact fp32 value."""
    if FORMAT == INT8:
        return code.to(tl.float32)
    elif FORMAT == E4M3:
        return _decode_fp8(code, 3, 7, 0.001953125, False)
    else:
        return _decode_fp8(code, 2, 15, 0.0000152587890625, True)
