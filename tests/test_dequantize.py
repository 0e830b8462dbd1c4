"""dequantize beyond the generated cases: every code of every format (signed zeros, subnormals, NaN and e5m2's
infinities) against torch's own upcast, strided rows, zero sizes, and the inputs it refuses."""

from __future__ import annotations

import pytest
import torch

import kernels
from kernels import backend, memory, registry
from kernels.errors import KernelInputError
from kernels.ops import _quant

DEV = backend.device()
registry.discover()
VARIANTS = [v.name for v in registry.variants_of("dequantize")]  # every variant, a new one included


def _every_code(fmt):
    """[2, 128] holding every code of the format once (int8: -128 too, which quantize never writes)."""
    return torch.arange(256, dtype=torch.int32).to(torch.uint8).view(_quant.FORMATS[fmt]).reshape(2, 128)


# 0 * NaN and 0 * inf are the point here for the NaN codes; the interpreter's numpy warns about them.
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("fmt", list(_quant.FORMATS))
@pytest.mark.parametrize("granularity", _quant.GRANULARITIES)
def test_dequantize_every_code(variant, fmt, granularity) -> None:
    q = _every_code(fmt)
    scale = torch.full(_quant.scale_shape(2, 128, granularity), 0.5)
    with memory.poisoned():
        got = kernels.dequantize(
            q.to(DEV), scale.to(DEV), granularity=granularity, dtype=torch.float32, variant=variant
        ).cpu()
    want = q.float() * 0.5  # torch's upcast decodes NaN, inf and subnormals correctly
    same = (got == want) & (torch.signbit(got) == torch.signbit(want))
    assert torch.all(same | (torch.isnan(got) & torch.isnan(want))), f"{variant} {fmt}: {(~same).sum()} codes differ"


# Exact against the op's definition: the product formed in fp32, rounded once to dtype. Not bf16: the interpreter
# casts fp32 to bf16 by truncation (within the bf16 table tolerance the generated tests use, not exact).
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_dequantize_strided_rows(variant, dtype) -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.randint(-127, 128, (5, 300), generator=g, dtype=torch.int32).to(torch.int8)[:, :256]
    scale = torch.rand((5, 2), generator=g) + 0.5
    got = kernels.dequantize(q.to(DEV), scale.to(DEV), granularity="block", dtype=dtype, variant=variant)
    want = (q.float() * scale.repeat_interleave(128, dim=1)).to(dtype)
    assert q.stride(0) == 300
    assert got.dtype == dtype and torch.equal(got.cpu(), want)


@pytest.mark.parametrize("variant", VARIANTS)
def test_dequantize_zero_size(variant) -> None:
    q = torch.empty(0, 128, dtype=torch.int8, device=DEV)
    scale = torch.empty(0, 1, device=DEV)
    assert kernels.dequantize(q, scale, variant=variant).shape == (0, 128)


# -- bad input -----------------------------------------------------------------------------------------------------
def _q(*shape, dtype=torch.float8_e4m3fn):
    shape = shape or (4, 256)
    return torch.randn(shape).to(dtype).to(DEV)


def _s(*shape, dtype=torch.float32):
    return torch.rand(shape, dtype=dtype, device=DEV) + 0.1


@pytest.mark.parametrize(
    ("q", "scale", "kwargs", "message"),
    [
        (_q(), _s(4, 1, dtype=torch.float16), {}, "scale must be torch.float32, got torch.float16"),
        (_q(), _s(4, 1, dtype=torch.float64), {}, "scale must be torch.float32, got torch.float64"),
        (_q(dtype=torch.float16), _s(4, 1), {}, "q must be one of .* got torch.float16"),
        (torch.zeros(4, 256, dtype=torch.uint8, device=DEV), _s(4, 1), {}, "q must be one of .* got torch.uint8"),
        (_q(), _s(4), {}, r"scale has shape \(4,\), but row granularity of q with shape \(4, 256\) needs \(4, 1\)"),
        (_q(), _s(1, 1), {}, r"scale has shape \(1, 1\), but row granularity .* needs \(4, 1\)"),
        (_q(), _s(4, 1), {"granularity": "block"}, r"scale has shape \(4, 1\), but block granularity .* \(4, 2\)"),
        (_q(), _s(4, 1), {"granularity": "tensor"}, r"tensor granularity .* needs \(1, 1\)"),
        (_q(), _s(1), {"granularity": "tensor"}, r"scale has shape \(1,\), but tensor granularity"),
        (_q(4, 200), _s(4, 1), {"granularity": "block"}, "128 does not divide the row length 200 of q"),
        (_q(), _s(2, 4).t(), {"granularity": "block"}, "scale must be contiguous"),
        (_q(4, 512)[:, ::2], _s(4, 1), {}, "columns of q must be contiguous"),
        (_q(2, 2, 256), _s(2, 1), {}, r"q must be 2-D \[rows, cols\]"),
        (_q(), _s(4, 1), {"dtype": torch.float64}, "dtype must be torch.float32, float16 or bfloat16"),
        (_q(), _s(4, 1), {"dtype": torch.int8}, "dtype must be torch.float32, float16 or bfloat16"),
        (_q(), _s(4, 1), {"granularity": "col"}, "granularity must be one of row, block, tensor"),
    ],
    ids=[
        "scale-f16",
        "scale-f64",
        "q-f16",
        "q-u8",
        "scale-1d",
        "scale-tensor-for-row",
        "scale-row-for-block",
        "scale-row-for-tensor",
        "scale-tensor-1d",
        "block-does-not-divide",
        "scale-strided",
        "q-strided-cols",
        "q-3d",
        "dtype-f64",
        "dtype-int",
        "granularity",
    ],
)
def test_dequantize_refuses(q, scale, kwargs, message) -> None:
    with pytest.raises(KernelInputError, match=message):
        kernels.dequantize(q, scale, **kwargs)
