"""nf4_dequantize beyond the generated cases: the codebook against its construction from normal quantiles, the
nibble order, every code in a 2-D weight shape, and the inputs it refuses."""

from __future__ import annotations

import pytest
import torch

import kernels
from kernels import backend, memory, registry
from kernels.errors import KernelInputError
from kernels.ops.nf4_dequantize import NF4_CODEBOOK, reference

DEV = backend.device()
registry.discover()
VARIANTS = [v.name for v in registry.variants_of("nf4_dequantize")]  # every variant, a new one included


def test_nf4_codebook_is_the_normal_float_construction() -> None:
    # QLoRA's NF4 (Appendix E; bitsandbytes' create_normal_map): 8 positive and 7 negative normal quantiles at
    # evenly spaced probabilities from 0.9677083 (the offset) to 0.5, with an exact 0, normalized to [-1, 1]. The
    # table is that construction rounded to fp32 (and computed by its authors in lower precision): about 1e-7.
    offset = 0.9677083
    positive = torch.special.ndtri(torch.linspace(offset, 0.5, 9, dtype=torch.float64)[:-1])
    negative = -torch.special.ndtri(torch.linspace(offset, 0.5, 8, dtype=torch.float64)[:-1])
    values = torch.cat([positive, torch.zeros(1, dtype=torch.float64), negative]).sort().values
    values = values / values.abs().max()
    table = torch.tensor(NF4_CODEBOOK, dtype=torch.float64)
    assert table.numel() == 16 and torch.all((table - values).abs() < 2e-7)
    # Every entry is an fp32 number, so the kernels' fp32 constants are the same numbers.
    assert torch.equal(table.float().double(), table)


@pytest.mark.parametrize("variant", VARIANTS)
def test_nf4_high_nibble_is_the_first_value(variant) -> None:
    # Byte 0x0F: code 0 (-1.0) first, then code 15 (+1.0); byte 0x7A: code 7 (0.0), then code 10.
    packed = torch.tensor([0x0F, 0x7A], dtype=torch.uint8, device=DEV)
    absmax = torch.tensor([2.0], device=DEV)
    out = kernels.nf4_dequantize(packed, absmax, shape=(4,), dtype=torch.float32, variant=variant).cpu()
    assert out.tolist() == [-2.0, 2.0, 0.0, 2 * torch.tensor(NF4_CODEBOOK[10]).item()]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_nf4_weight_shape_every_code(variant, dtype) -> None:
    # A [48, 40] weight: 1920 values, 30 blocks whose boundaries fall inside rows; every byte value appears.
    g = torch.Generator().manual_seed(0)
    packed = torch.cat([torch.arange(256), torch.randint(0, 256, (960 - 256,), generator=g)]).to(torch.uint8)
    absmax = torch.rand(30, generator=g) * 3 + 0.1
    with memory.poisoned():
        out = kernels.nf4_dequantize(packed.to(DEV), absmax.to(DEV), shape=(48, 40), dtype=dtype, variant=variant)
    want = reference(packed, absmax.double(), (48, 40))
    # fp32: the fp32 product of two fp32 numbers, rounded once, is the float64 product rounded to fp32. fp16: one
    # rounding of that fp32 product.
    assert out.shape == (48, 40) and torch.equal(out.cpu(), want.float().to(dtype))


# -- bad input -----------------------------------------------------------------------------------------------------
def _packed(n_bytes, dtype=torch.uint8):
    return torch.randint(0, 256, (n_bytes,), dtype=torch.int32).to(dtype).to(DEV)


def _absmax(n, dtype=torch.float32):
    return (torch.rand(n) + 0.1).to(dtype).to(DEV)


@pytest.mark.parametrize(
    ("packed", "absmax", "kwargs", "message"),
    [
        (_packed(33), _absmax(2), {"shape": (67,)}, r"shape \(67,\) holds 67 values, an odd number"),
        (_packed(33), _absmax(2), {"shape": (3, 25)}, r"holds 75 values, an odd number"),
        (_packed(33), _absmax(2), {"shape": (64,)}, r"holds 64 values, but packed holds 33 bytes, which is 66 values"),
        (
            _packed(64),
            _absmax(1),
            {"shape": (128,)},
            r"128 values in blocks of 64 need absmax of shape \(2,\), got \(1,",
        ),
        (_packed(64), _absmax(3), {"shape": (128,)}, r"need absmax of shape \(2,\), got \(3,\)"),
        (_packed(33), _absmax(1), {"shape": (66,)}, r"66 values in blocks of 64 need absmax of shape \(2,\)"),
        (_packed(64), _absmax(2).reshape(1, 2), {"shape": (128,)}, r"need absmax of shape \(2,\), got \(1, 2\)"),
        (_packed(64, torch.int8), _absmax(2), {"shape": (128,)}, "packed must be torch.uint8 .* got torch.int8"),
        (
            _packed(64),
            _absmax(2, torch.float16),
            {"shape": (128,)},
            "absmax must be torch.float32 .* got torch.float16",
        ),
        (_packed(64), _absmax(2), {"shape": (128,), "dtype": torch.float64}, "dtype must be torch.float32, float16"),
        (_packed(64), _absmax(2), {"shape": 128}, "shape must be a tuple of non-negative ints, got 128"),
        (_packed(64), _absmax(2), {"shape": (-2, -64)}, "shape must be a tuple of non-negative ints"),
        (_packed(128)[::2], _absmax(2), {"shape": (128,)}, "packed and absmax must be contiguous"),
    ],
    ids=[
        "odd-count",
        "odd-count-2d",
        "packed-length",
        "too-few-absmax",
        "too-many-absmax",
        "ragged-block-absmax",
        "absmax-2d",
        "packed-int8",
        "absmax-f16",
        "dtype-f64",
        "shape-int",
        "shape-negative",
        "packed-strided",
    ],
)
def test_nf4_refuses(packed, absmax, kwargs, message) -> None:
    with pytest.raises(KernelInputError, match=message):
        kernels.nf4_dequantize(packed, absmax, **kwargs)


@pytest.mark.parametrize("variant", VARIANTS)
def test_nf4_zero_size(variant) -> None:
    out = kernels.nf4_dequantize(_packed(0), _absmax(0), shape=(0, 64), variant=variant)
    assert out.shape == (0, 64)
