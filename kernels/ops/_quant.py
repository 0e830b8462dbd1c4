"""What the quantize and dequantize ops share: the formats, the scale layouts, and the float64 reference quantizer.

A mode is ``<format>_<granularity>``: format int8, e4m3 (torch.float8_e4m3fn) or e5m2 (torch.float8_e5m2);
granularity tensor (one scale), row (one per row) or block (one per 1 x 128 block along a row). Scales are fp32 of
shape [1, 1], [rows, 1] and [rows, cols / 128], so tensor and row scales broadcast against q.

The definition, exactly, for a group (the tensor, a row or a block) of x:

    absmax = max |x| over the group              (NaN if the group holds a NaN, inf if it holds an inf)
    scale  = max(fp32(absmax / FMAX), 2**-126)   (IEEE division; the floor: see below)
    q      = encode(fp32(x * fp32(1 / scale)))   (IEEE reciprocal once per group, then one fp32 multiply)

encode rounds to nearest, ties to even, and saturates to [-FMAX, FMAX] (int8 symmetric, [-127, 127]). The scaled
value of a finite group never leaves that range by more than fp32 rounding, so saturation only catches that.
Multiplying by the reciprocal rather than dividing costs one multiply per element where an IEEE division costs
about ten instructions, which a kernel running at memory speed cannot spare; the value differs from x / scale by
at most an fp32 ulp, and the float64 reference forms exactly the same one. The floor 2**-126 (fp32's smallest
normal) keeps every scale normal, so its reciprocal is finite and flush-to-zero arithmetic never meets it: a group
whose absmax is below 2**-126 * FMAX (only fp32 or bf16 data so tiny) gets codes below FMAX, and an all-zero group
gets codes 0, both dequantizing to within half a step as usual.
A NaN or inf anywhere in a group makes its scale NaN or inf: every finite element then quantizes to +-0 and every
non-finite one to NaN (inf * 0), which e4m3 and e5m2 encode as 0x7F (the canonical NaN torch's cast writes for a
positive NaN; the sign of a NaN made by inf * 0 differs between CPUs and GPUs, so it is not kept) and int8, having
no NaN, as 0. Either way every element of such a group dequantizes to NaN (0 * inf and 0 * NaN are NaN): the
damage is confined to the group and never silent. (torch's own ``.to(float8_e4m3fn)`` saturates inf to 448 in
torch 2.13 but wrote NaN for values past 480 in earlier releases; the rule above needs neither.)
"""

from __future__ import annotations

import torch

from kernels.errors import KernelInputError

FORMATS: dict[str, torch.dtype] = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2, "int8": torch.int8}
FORMAT_OF: dict[torch.dtype, str] = {v: k for k, v in FORMATS.items()}
FMAX: dict[str, float] = {"e4m3": 448.0, "e5m2": 57344.0, "int8": 127.0}
# Mantissa bits and the smallest normal exponent of the fp8 formats: their grid, for the float64 reference.
FP8_GRID: dict[str, tuple[int, int]] = {"e4m3": (3, -6), "e5m2": (2, -14)}
GRANULARITIES = ("row", "block", "tensor")
BLOCK = 128
MIN_SCALE = 2.0**-126
"""fp32's smallest normal number: the smallest scale."""
"""Elements per block scale, along a row (the 1 x 128 activation blocks of DeepSeek-V3-style fp8 training)."""
# Row-wise fp8 first: the bench times each variant in the first mode it declares.
MODES = tuple(f"{fmt}_{gran}" for fmt in FORMATS for gran in GRANULARITIES)


def mode(fmt: str, granularity: str) -> str:
    return f"{fmt}_{granularity}"


def split_mode(name: str) -> tuple[str, str]:
    fmt, granularity = name.split("_")
    return fmt, granularity


def scale_shape(rows: int, cols: int, granularity: str) -> tuple[int, int]:
    return {"tensor": (1, 1), "row": (rows, 1), "block": (rows, cols // BLOCK)}[granularity]


def check_granularity(op: str, granularity) -> None:
    if granularity not in GRANULARITIES:
        raise KernelInputError(f"{op}: granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")


def check_rows(op: str, name: str, t: torch.Tensor, granularity: str) -> None:
    """2-D, unit column stride, and for block scales a row length that 128 divides."""
    if t.dim() != 2:
        raise KernelInputError(f"{op}: {name} must be 2-D [rows, cols], got shape {tuple(t.shape)}")
    if t.numel() and t.shape[1] > 1 and t.stride(1) != 1:
        raise KernelInputError(
            f"{op}: the columns of {name} must be contiguous (stride 1), got strides {t.stride()}; pass "
            f"{name}.contiguous()"
        )
    if granularity == "block" and t.shape[1] % BLOCK:
        raise KernelInputError(
            f"{op}: block granularity takes blocks of {BLOCK} along a row, and {BLOCK} does not divide the row "
            f"length {t.shape[1]} of {name} (shape {tuple(t.shape)}); pad the rows to a multiple of {BLOCK} or use "
            "row granularity"
        )


def expand_scale(scale: torch.Tensor, cols: int, granularity: str) -> torch.Tensor:
    """A scale of ``scale_shape`` broadcast to every element of [rows, cols]."""
    return scale.repeat_interleave(BLOCK, dim=1) if granularity == "block" else scale


def absmax(x: torch.Tensor, granularity: str) -> torch.Tensor:
    """max |x| per group, NaN-propagating (torch.amax is), in the layout of the scales. Empty groups give 0."""
    rows, cols = x.shape
    a = x.abs()
    if granularity == "tensor":
        return (a.amax() if a.numel() else a.new_zeros(())).reshape(1, 1)
    if granularity == "row":
        return a.amax(dim=1, keepdim=True) if cols else a.new_zeros((rows, 1))
    return a.reshape(rows, cols // BLOCK, BLOCK).amax(dim=2) if cols else a.new_zeros((rows, 0))


def round_fp8(v: torch.Tensor, fmt: str) -> torch.Tensor:
    """float64 ``v`` rounded to the fp8 grid of ``fmt``, to nearest with ties to even, saturated; NaN stays NaN.

    The grid step of |v| is 2**(e - mantissa bits) for its exponent e (frexp is exact), floored at the smallest
    normal exponent, where the subnormals' fixed step takes over; the division by a power of two is exact, so
    torch.round (ties to even) does the only rounding."""
    mbits, emin = FP8_GRID[fmt]
    a = v.abs()
    _, e = torch.frexp(a)
    step = torch.ldexp(torch.ones_like(a), (e - 1).clamp(min=emin) - mbits)
    r = (torch.round(a / step) * step).clamp(max=FMAX[fmt])
    return torch.where(torch.isnan(v), v, torch.copysign(r, v))


def reference_quantize(x: torch.Tensor, fmt: str, granularity: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The float64 reference quantizer: (q as float64 values, scale in float64 before its rounding to fp32)."""
    x = x.to(torch.float64)
    amax = absmax(x, granularity)
    scale = (amax / FMAX[fmt]).clamp(min=MIN_SCALE)
    # q is defined from the stored fp32 scale, through its fp32 reciprocal. A float64 quotient of fp32 values
    # rounded to fp32 is the correctly rounded fp32 quotient (53 >= 2 * 24 + 2 bits: double rounding is innocuous
    # for division), and a float64 product of two fp32 values is exact: rounded to fp32, it is the fp32 product.
    # So this is bit for bit what the kernels compute, and the codes can be compared exactly.
    stored = scale.to(torch.float32).to(torch.float64)
    inverse = (1.0 / stored).to(torch.float32).to(torch.float64)
    quotient = (x * expand_scale(inverse, x.shape[1], granularity)).to(torch.float32).to(torch.float64)
    if fmt == "int8":
        q = torch.round(quotient.clamp(-FMAX[fmt], FMAX[fmt]))
        q = torch.where(torch.isnan(quotient), torch.zeros_like(q), q)
    else:
        q = round_fp8(quotient, fmt)
        # NaN is encoded as 0x7F, a positive NaN.
        q = torch.where(torch.isnan(q), torch.full_like(q, float("nan")), q)
    return q, scale


def reference_dequantize(q: torch.Tensor, scale: torch.Tensor, granularity: str) -> torch.Tensor:
    return q.to(torch.float64) * expand_scale(scale.to(torch.float64), q.shape[1], granularity)
