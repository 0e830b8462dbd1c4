"""quantize beyond the generated cases: ragged and strided rows, round-to-nearest-even at exact ties, the round
trip within half a step, saturation, NaN and inf, all-zero groups, the int8/fp8 codec over every fp8 value and the
midpoints between them, and the inputs it refuses."""

from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl

import kernels
from kernels import backend, memory, registry
from kernels.errors import KernelInputError
from kernels.ops import _quant
from variants.quantize import _codec

DEV = backend.device()
registry.discover()
VARIANTS = [v.name for v in registry.variants_of("quantize")]  # every variant, a new one included
FP8 = ["e4m3", "e5m2"]


def _x(rows, cols, *, seed=0, dtype=torch.bfloat16, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn((rows, cols), generator=g) * scale).to(dtype)
    return torch.where(x == 0, torch.full_like(x, 0.5), x).to(DEV)


def _quantize(x, mode, variant):
    fmt, granularity = _quant.split_mode(mode)
    with memory.poisoned():
        return kernels.quantize(x, qdtype=_quant.FORMATS[fmt], granularity=granularity, variant=variant)


def _bits(t):
    return t.view(torch.uint8) if t.element_size() == 1 and t.dtype != torch.uint8 else t


def _check_exact(x, mode, variant):
    """Codes bitwise (signed zeros included) and scales exactly equal to the float64 reference's."""
    fmt, granularity = _quant.split_mode(mode)
    q, scale = _quantize(x, mode, variant)
    want_q, want_scale = _quant.reference_quantize(x.cpu(), fmt, granularity)
    want_q = want_q.to(_quant.FORMATS[fmt])
    assert torch.equal(_bits(q).cpu(), _bits(want_q)), f"{variant} {mode}: codes differ from the reference"
    got, want = scale.cpu(), want_scale.float()
    same_nan = torch.equal(torch.isnan(got), torch.isnan(want))
    assert (
        same_nan
        and torch.equal(got.nan_to_num(nan=0.0, posinf=0.0), want.nan_to_num(nan=0.0, posinf=0.0))
        and (torch.equal(torch.isinf(got), torch.isinf(want)))
    ), f"{variant} {mode}: scales differ from fp32(absmax / max)"
    return q, scale


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("mode", _quant.MODES)
def test_quantize_exact_on_ragged_and_strided_rows(variant, mode) -> None:
    # Rows of 67 (tensor and row scales) or 3 blocks (block scales), read through a row stride past the row length.
    cols = 384 if mode.endswith("block") else 67
    x = _x(5, cols + 13, seed=1, dtype=torch.float32)[:, :cols]
    assert x.stride(0) != cols
    _check_exact(x, mode, variant)


@pytest.mark.parametrize("variant", VARIANTS)
def test_quantize_long_rows_take_the_two_pass_path(variant) -> None:
    # Past fused's 16384-column tile its row programs read the row twice.
    _check_exact(_x(2, 20000, seed=2), "e4m3_row", variant)


# Exact ties: with absmax = FMAX * 2**k the scale is 2**k and every quotient below is exact, so each sits exactly
# between two codes and must round to the even one.
TIES = {
    "int8": ([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5], [0, 2, 2, 0, -2, -2, 126]),
    # 1.0625 lies between 1 and 1.125 (even: 1), 1.1875 between 1.125 and 1.25 (even: 1.25); 2**-10 and 3 * 2**-10
    # are halfway between subnormals (0 | 2**-9 and 2**-9 | 2**-8); 432 between 416 and 448.
    "e4m3": ([1.0625, 1.1875, -1.0625, 2.0**-10, 3 * 2.0**-10, 432.0], [1.0, 1.25, -1.0, 0.0, 2.0**-8, 448.0]),
    # 1.125 lies between 1 and 1.25 (even: 1), 1.375 between 1.25 and 1.5 (even: 1.5); 2**-17 between 0 and 2**-16;
    # 53248 between 49152 (mantissa 10) and 57344 (mantissa 11).
    "e5m2": ([1.125, 1.375, -1.375, 2.0**-17, 3 * 2.0**-17, 53248.0], [1.0, 1.5, -1.5, 0.0, 2.0**-15, 49152.0]),
}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("fmt", list(_quant.FORMATS))
@pytest.mark.parametrize("granularity", _quant.GRANULARITIES)
def test_quantize_rounds_ties_to_even(variant, fmt, granularity) -> None:
    quotients, expected = TIES[fmt]
    step = 2.0**-3
    row = torch.tensor([_quant.FMAX[fmt], *quotients], dtype=torch.float64) * step
    x = torch.zeros(2, 128, dtype=torch.float32)
    x[:, : row.numel()] = row.float()
    x[:, row.numel() :] = step  # never 0 but for the test's own zeros below
    q, scale = _quantize(x.to(DEV), f"{fmt}_{granularity}", variant)
    assert torch.all(scale == step)
    got = q[0, 1 : row.numel()].cpu().to(torch.float64)
    assert got.tolist() == expected, f"{variant} {fmt}: ties rounded to {got.tolist()}, not to even {expected}"


def _grid_step(v: torch.Tensor, fmt: str) -> torch.Tensor:
    """The format's grid step at |v| (int8: 1)."""
    if fmt == "int8":
        return torch.ones_like(v)
    mbits, emin = _quant.FP8_GRID[fmt]
    _, e = torch.frexp(v.abs())
    return torch.ldexp(torch.ones_like(v), (e - 1).clamp(min=emin) - mbits)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("mode", _quant.MODES)
def test_quantize_round_trip_within_half_a_step(variant, mode) -> None:
    fmt, granularity = _quant.split_mode(mode)
    x = _x(9, 256, seed=3, dtype=torch.float32)
    q, scale = _quantize(x, mode, variant)
    back = kernels.dequantize(q, scale, granularity=granularity, dtype=torch.float32, variant=variant).cpu().double()
    x64 = x.cpu().double()
    s = _quant.expand_scale(scale.cpu().double(), x.shape[1], granularity)
    # Half a grid step (int8: half of 1; fp8: half an ulp at |x / scale|) times the scale, plus the fp32 rounding
    # of the quotient x / scale and of the product q * scale (a few units in 2**-24 of |x|).
    bound = 0.5 * _grid_step(x64 / s, fmt) * s + 2.0**-22 * x64.abs()
    err = (back - x64).abs()
    assert torch.all(err <= bound), f"{variant} {mode}: round trip off by {(err - bound).max().item():.3g} past bound"


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("mode", _quant.MODES)
def test_quantize_saturates_at_the_format_max(variant, mode) -> None:
    # Every group's largest |x| maps to +-FMAX itself (its quotient is FMAX up to fp32 rounding, on either side),
    # and no code leaves the range: no 0x7F / 0x80 for int8, no NaN or inf byte for fp8.
    fmt, granularity = _quant.split_mode(mode)
    x = _x(6, 256, seed=4, dtype=torch.float32, scale=1000.0)
    q, _ = _quantize(x, mode, variant)
    q64 = q.cpu().double()
    assert torch.all(q64.abs() <= _quant.FMAX[fmt]) and not torch.isnan(q64).any()
    amax = _quant.absmax(x.cpu().double(), granularity)
    is_max = x.cpu().double().abs() == _quant.expand_scale(amax, x.shape[1], granularity)
    assert torch.all(q64[is_max].abs() == _quant.FMAX[fmt])
    if fmt == "int8":
        assert q.min() >= -127


@triton.jit
def _encode_kernel(v_ptr, code_ptr, n, FORMAT: tl.constexpr, HW_FP8: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(code_ptr + i, _codec.encode(tl.load(v_ptr + i, mask=i < n), FORMAT, HW_FP8), mask=i < n)


@triton.jit
def _decode_kernel(code_ptr, v_ptr, n, FORMAT: tl.constexpr, HW_FP8: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(v_ptr + i, _codec.decode(tl.load(code_ptr + i, mask=i < n).to(tl.int32), FORMAT, HW_FP8), mask=i < n)


# The software codec everywhere; the GPU's own conversions too where the variants take them (sm_90 and later).
CODECS = ["software", *(["hardware"] if _codec.hw_fp8(DEV) else [])]


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("fmt", FP8)
def test_quantize_fp8_codec_on_every_value_and_midpoint(fmt, codec) -> None:
    """The encoder on every finite fp8 value, every midpoint between neighbours and the fp32 numbers on either side
    of it, values past the range, +-inf, NaNs of either sign, signed zeros and fp32 subnormals, against the float64
    reference rounding and against torch's cast of the saturated value; the decoder on all 256 bytes against torch's
    upcast."""
    dtype = _quant.FORMATS[fmt]
    every = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    values = every.view(dtype).float()
    finite = values[torch.isfinite(values)].unique()
    mid = (finite[1:] + finite[:-1]) / 2
    nan, inf, tiny = float("nan"), float("inf"), 2.0**-149
    beyond = torch.tensor(
        [1e30, -1e30, 1e6, 500.0, 470.0, 61000.0, -70000.0, 1e-30, -1e-30, nan, -nan, inf, -inf, 0.0, -0.0, tiny, -tiny]
    )
    v = torch.cat([finite, mid, torch.nextafter(mid, mid + 1), torch.nextafter(mid, mid - 1), beyond])
    code = torch.empty(v.shape, dtype=torch.int32, device=DEV)
    fmt_code, hw = _codec.FORMAT_CODE[fmt], codec == "hardware"
    _encode_kernel[(triton.cdiv(v.numel(), 256),)](v.to(DEV), code, v.numel(), FORMAT=fmt_code, HW_FP8=hw, BLOCK=256)
    got = code.cpu().to(torch.uint8)
    want = _quant.round_fp8(v.double(), fmt).to(dtype).view(torch.uint8)
    want = torch.where(torch.isnan(v), torch.full_like(want, 0x7F), want)
    assert torch.equal(got, want), f"{fmt}: {(got != want).sum().item()} codes differ from the float64 rounding"
    saturated = v.clamp(-_quant.FMAX[fmt], _quant.FMAX[fmt]).to(dtype).view(torch.uint8)
    assert torch.equal(got[~torch.isnan(v)], saturated[~torch.isnan(v)]), f"{fmt}: codes differ from torch's cast"

    decoded = torch.empty(256, dtype=torch.float32, device=DEV)
    _decode_kernel[(1,)](every.to(DEV), decoded, 256, FORMAT=fmt_code, HW_FP8=hw, BLOCK=256)
    decoded = decoded.cpu()
    same = (decoded == values) & (torch.signbit(decoded) == torch.signbit(values))
    assert torch.all(same | (torch.isnan(decoded) & torch.isnan(values))), f"{fmt}: decoded values differ from torch"


# NaN arithmetic is the point here: the interpreter's numpy says so for every inf / inf and 0 * NaN.
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("fmt", list(_quant.FORMATS))
@pytest.mark.parametrize("granularity", _quant.GRANULARITIES)
def test_quantize_nan_and_inf_poison_their_group_only(variant, fmt, granularity) -> None:
    x = _x(4, 256, seed=5, dtype=torch.float32).cpu()
    x[1, 3] = float("nan")
    x[2, 200] = float("-inf")
    q, scale = _check_exact(x.to(DEV), f"{fmt}_{granularity}", variant)
    back = kernels.dequantize(q, scale, granularity=granularity, dtype=torch.float32, variant=variant).cpu()
    s = _quant.expand_scale(scale.cpu(), 256, granularity).expand(4, 256)
    poisoned = ~torch.isfinite(s)
    # The NaN's group has a NaN scale, the inf's an inf one: exactly the groups holding them.
    expected = torch.zeros(4, 256, dtype=torch.bool)
    for r, c in ((1, 3), (2, 200)):
        if granularity == "tensor":
            expected[:] = True
        elif granularity == "row":
            expected[r] = True
        else:
            expected[r, c // 128 * 128 : c // 128 * 128 + 128] = True
    assert torch.equal(poisoned, expected)
    # Every element of a poisoned group dequantizes to NaN, never to a plausible number; the rest are finite.
    assert torch.isnan(back[poisoned]).all() and torch.isfinite(back[~poisoned]).all()
    codes = q.cpu()
    if fmt == "int8":
        assert (codes[poisoned] == 0).all()
    else:
        nan_codes = _bits(codes)[1, 3].item(), _bits(codes)[2, 200].item()
        assert nan_codes == (0x7F, 0x7F)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("granularity", _quant.GRANULARITIES)
def test_quantize_zero_and_tiny_groups_get_the_floor_scale(variant, granularity) -> None:
    # Row 1 all zeros, row 2 so small (about 1e-39, fp32 subnormals included) that absmax / FMAX is below 2**-126:
    # both get the floor scale 2**-126, whose reciprocal is finite. Zeros code to 0; the tiny row to codes below
    # FMAX that still round-trip within half a step. (A tensor scale's group is the whole tensor: all of it tiny.)
    x = _x(3, 128, seed=6, dtype=torch.float32).cpu()
    if granularity == "tensor":
        x *= 1e-39
    x[1] = 0.0
    x[2] = x[2] * 1e-39
    q, scale = _check_exact(x.to(DEV), f"int8_{granularity}", variant)
    floor_rows = slice(None) if granularity == "tensor" else slice(1, 3)
    assert torch.all(scale.cpu()[floor_rows] == 2.0**-126) and torch.all(q.cpu()[1] == 0)
    assert q.cpu()[2].abs().max() < 127
    back = kernels.dequantize(q, scale, granularity=granularity, dtype=torch.float32, variant=variant).cpu()
    assert torch.all((back[2].double() - x[2].double()).abs() <= 0.5 * 2.0**-126 * (1 + 2.0**-20))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shape", [(0, 128), (3, 0)])
def test_quantize_zero_size(variant, shape) -> None:
    q, scale = kernels.quantize(torch.randn(shape, device=DEV), granularity="row", variant=variant)
    assert q.shape == shape and scale.shape == (shape[0], 1)


# -- bad input -----------------------------------------------------------------------------------------------------
def test_quantize_block_size_must_divide_the_row() -> None:
    with pytest.raises(KernelInputError, match=r"128 does not divide the row length 200 of x \(shape \(4, 200\)\)"):
        kernels.quantize(_x(4, 200), granularity="block")


@pytest.mark.parametrize(
    ("x", "kwargs", "message"),
    [
        (torch.randn(3, 4, 128), {}, r"x must be 2-D \[rows, cols\], got shape \(3, 4, 128\)"),
        (torch.randn(128), {}, r"x must be 2-D"),
        # Sliced on the device: moving a sliced CPU tensor to a GPU makes it contiguous (torch keeps the strides of
        # dense tensors only), and the case would test nothing there.
        (lambda: torch.randn(4, 256, device=DEV)[:, ::2], {}, r"columns of x must be contiguous \(stride 1\)"),
        (torch.ones(4, 128, dtype=torch.int32), {}, "x must be a floating-point tensor"),
        (torch.randn(4, 128, dtype=torch.float64), {}, "x must be float32, float16 or bfloat16, got torch.float64"),
        (torch.randn(4, 128), {"qdtype": torch.float16}, "qdtype must be one of"),
        (torch.randn(4, 128), {"qdtype": torch.uint8}, "qdtype must be one of"),
        (torch.randn(4, 128), {"granularity": "column"}, "granularity must be one of row, block, tensor"),
    ],
    ids=["3d", "1d", "strided-cols", "int", "float64", "qdtype-f16", "qdtype-u8", "granularity"],
)
def test_quantize_refuses(x, kwargs, message) -> None:
    x = x() if callable(x) else x.to(DEV)
    assert x.device.type == DEV.type
    with pytest.raises(KernelInputError, match=message):
        kernels.quantize(x, **kwargs)
