"""What the quantize and dequantize variants share: the tiles of their 2-D kernels, absmax as an integer max, the
scale, and the int8 and fp8 encoders and decoders.

Two codecs for fp8, chosen per launch by the HW_FP8 constexpr (``hw_fp8``), both exact to the rule of
kernels/ops/_quant.py (round to nearest even, saturate finite and infinite values to +-FMAX, NaN to 0x7F):

* Software, in integer bit arithmetic on fp32 values: under Triton's interpreter (CPU CI) and on GPUs before
  sm_90. The interpreter rounds float -> fp8 casts wrongly (ties away from zero, a lost carry:
  https://github.com/triton-lang/triton/issues/8322) and its fp8 -> fp32 cast reads the NaN and inf codes as
  numbers; NVIDIA's own software conversion paths have had rounding bugs
  (https://github.com/triton-lang/triton/pull/11753). On sm_89 Triton 3.6 lowers fp32 -> fp8 as
  ``cvt.rz.f16.f32`` then ``cvt.rn.satfinite.e4m3x2.f16x2``: rounding twice, toward zero first, which turns a
  value just past a tie into the tie and then rounds it to even, the wrong way. Before sm_89 there is no
  conversion instruction at all.
* Hardware, on sm_90 and later: ``.to(tl.float8e4nv)`` / ``.to(tl.float8e5)`` (round to nearest even, Triton's
  default for float downcasts, written out), which Triton 3.6 lowers to ``cvt.rn.satfinite.e4m3x2.f32`` /
  ``cvt.rn.satfinite.e5m2x2.f32``: one rounding, to nearest even, and .satfinite maps every |x| past the largest
  finite value, inf included, to that value with x's sign, as the rule does; signed zeros and fp32 inputs too small
  for the format round to +-0 with their sign. Only a NaN's byte is left open by the ISA ("NaN in the destination
  format", sign and payload unsaid), so a select pins it to 0x7F. Decoding is ``cvt.rn.f16x2.{e4m3x2,e5m2x2}``
  then ``cvt.f32.f16``: both widen, so every code comes out exact (e4m3 and e5m2 values, subnormals included, are
  all f16 numbers; e5m2 is f16's top byte, infinities and NaNs included; e4m3fn's 0x7F / 0xFF give NaN).

Why both: on an H200 (torch 2.11, Triton 3.6, 2026-11-28; 8192 x 8192 bf16, % of copy bandwidth, fused variants)
the software codec left fp8 about 15 points behind int8 for the same bytes: quantize int8 row / block 78.4 / 80.4,
e4m3 62.9 / 64.5, e5m2 62.8 / 64.5; dequantize int8 row / block / tensor 84.3 / 79.0 / 84.1, e4m3 75.7 / 72.5 /
79.2, e5m2 69.7 / 65.4 / 70.0. Its ten-odd integer operations per element cost more than a memory-bound kernel
had to spare. In sm_90 PTX the hardware codec makes the fp8 kernels shorter than the int8 ones (the quantize row
kernel 219 lines against int8's 235 and the software codec's 395; the dequantize tile kernel 232 against 248 and
608 to 704). The interpreter keeps the software codec, so CPU CI tests it; the GPU tests check both codecs
bit for bit (tests/test_quantize.py runs the codec kernels with HW_FP8 on and off).

An underscore module: it registers nothing.
"""

import functools

import torch
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


def hw_fp8(device) -> bool:
    """The kernels' HW_FP8 constexpr for a launch on ``device``: the GPU's own fp8 conversions on sm_90 and later,
    never under the interpreter (see the module's docstring for sm_89 and before)."""
    if backend.interpreting():
        return False
    device = torch.device(device)
    if device.type != "cuda":
        return False
    return _capability(device.index if device.index is not None else torch.cuda.current_device()) >= (9, 0)


@functools.cache
def _capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


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
def _encode_fp8_hw(v, FORMAT: tl.constexpr):
    # cvt.rn.satfinite.{e4m3x2,e5m2x2}.f32: round to nearest even, saturate finite and infinite values past the
    # range to the signed max finite, NaN to a NaN byte whose sign and payload the ISA leaves open: pinned to 0x7F.
    if FORMAT == E4M3:
        code = v.to(tl.float8e4nv, fp_downcast_rounding="rtne").to(tl.uint8, bitcast=True)
    else:
        code = v.to(tl.float8e5, fp_downcast_rounding="rtne").to(tl.uint8, bitcast=True)
    return tl.where(v != v, 0x7F, code.to(tl.int32))


@triton.jit
def encode(v, FORMAT: tl.constexpr, HW_FP8: tl.constexpr):
    """fp32 ``v`` -> int32 code: the int8 value in [-127, 127], or the fp8 byte in 0..255. Rounds to nearest even and
    saturates (+-inf included); NaN becomes 0 (int8) or 0x7F (fp8). HW_FP8 (see ``hw_fp8``) takes the GPU's own
    conversion for fp8, bit for bit the same codes."""
    if FORMAT == INT8:
        r = tl.minimum(tl.maximum(v, -127.0), 127.0)
        # Adding 1.5 * 2**23 puts the sum in [2**23, 2**24), where fp32's step is 1: the add itself rounds to an
        # integer, to nearest even, and the sum's low bits are that integer offset by 2**22.
        code = (r + 12582912.0).to(tl.int32, bitcast=True) - 0x4B400000
        return tl.where(v != v, 0, code)
    elif HW_FP8:
        return _encode_fp8_hw(v, FORMAT)
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
def decode(code, FORMAT: tl.constexpr, HW_FP8: tl.constexpr):
    """int32 code (the value loaded from a q tensor, fp8 bytes read as uint8) -> its exact fp32 value. HW_FP8 (see
    ``hw_fp8``) takes the GPU's own conversion for fp8 (fp8 -> f16, exact, then f16 -> f32, exact)."""
    if FORMAT == INT8:
        return code.to(tl.float32)
    elif HW_FP8:
        if FORMAT == E4M3:
            return code.to(tl.uint8).to(tl.float8e4nv, bitcast=True).to(tl.float32)
        else:
            return code.to(tl.uint8).to(tl.float8e5, bitcast=True).to(tl.float32)
    elif FORMAT == E4M3:
        return _decode_fp8(code, 3, 7, 0.001953125, False)
    else:
        return _decode_fp8(code, 2, 15, 0.0000152587890625, True)
