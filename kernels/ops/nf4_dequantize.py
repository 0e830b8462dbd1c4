"""nf4_dequantize: QLoRA's 4-bit NormalFloat weights back to floating point.

    x[shape] = nf4_dequantize(packed[n / 2] uint8, absmax[ceil(n / 64)] fp32, shape=..., dtype=...)

The n values of ``shape`` (flattened row-major) are stored two per byte: value 2i in the HIGH nibble (bits 7-4) of
byte i and value 2i+1 in the LOW nibble (bits 3-0), the order bitsandbytes packs them in. Each 4-bit code indexes
the 16-value NF4 codebook below, and each block of 64 consecutive values has one fp32 absmax:
``x[k] = NF4[code[k]] * absmax[k // 64]``, formed in fp32 (the codebook entries are fp32 values) and rounded once to
``dtype``. A last block shorter than 64 is allowed (bitsandbytes' blockwise layout has one for any n). No backward:
QLoRA trains the adapters, never the frozen 4-bit weights.
"""

from __future__ import annotations

import math

import torch

from kernels import dispatch, spec
from kernels.dtypes import FLOATS
from kernels.errors import KernelInputError
from kernels.ops._util import require_tensor

NF4_BLOCK = 64
# The NF4 data type of Dettmers et al., "QLoRA: Efficient Finetuning of Quantized LLMs" (arXiv:2305.14314),
# Appendix E: the 16 values, for codes 0 to 15, as the paper lists them and bitsandbytes ships them. Each decimal is
# the exact value of an fp32 number, so this float64 table and the kernels' fp32 constants hold the same numbers.
NF4_CODEBOOK = (
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
)


def unpack_codes(packed: torch.Tensor) -> torch.Tensor:
    """The codes of ``packed`` in value order: high nibble first."""
    flat = packed.reshape(-1).to(torch.int64)
    return torch.stack([flat >> 4, flat & 0xF], dim=1).reshape(-1)


def reference(packed, absmax, shape, dtype=torch.bfloat16):
    """In float64: codebook lookup, times the block's absmax."""
    codes = unpack_codes(packed)
    codebook = torch.tensor(NF4_CODEBOOK, dtype=torch.float64, device=packed.device)
    block_absmax = absmax.to(torch.float64).repeat_interleave(NF4_BLOCK)[: codes.numel()]
    return (codebook[codes] * block_absmax).reshape(shape)


def _count(shape) -> int:
    return math.prod(shape)


def _validate(inputs: spec.Inputs) -> None:
    packed = require_tensor("nf4_dequantize", "packed", inputs["packed"])
    absmax = require_tensor("nf4_dequantize", "absmax", inputs["absmax"])
    shape = inputs["shape"]
    if packed.dtype != torch.uint8:
        raise KernelInputError(
            f"nf4_dequantize: packed must be torch.uint8 (two 4-bit codes a byte), got {packed.dtype}"
        )
    if absmax.dtype != torch.float32:
        raise KernelInputError(
            f"nf4_dequantize: absmax must be torch.float32 (one per block of 64), got {absmax.dtype}"
        )
    if inputs["dtype"] not in FLOATS:
        raise KernelInputError(
            f"nf4_dequantize: dtype must be torch.float32, float16 or bfloat16, got {inputs['dtype']!r}"
        )
    if not isinstance(shape, tuple | list | torch.Size) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
        raise KernelInputError(f"nf4_dequantize: shape must be a tuple of non-negative ints, got {shape!r}")
    if not packed.is_contiguous() or not absmax.is_contiguous():
        raise KernelInputError(
            f"nf4_dequantize: packed and absmax must be contiguous, got strides {packed.stride()} and {absmax.stride()}"
        )
    n = _count(shape)
    if n % 2:
        raise KernelInputError(
            f"nf4_dequantize: shape {tuple(shape)} holds {n} values, an odd number; NF4 packs two values a byte, so "
            "the count must be even"
        )
    if n != 2 * packed.numel():
        raise KernelInputError(
            f"nf4_dequantize: shape {tuple(shape)} holds {n} values, but packed holds {packed.numel()} bytes, "
            f"which is {2 * packed.numel()} values"
        )
    blocks = -(-n // NF4_BLOCK)
    if absmax.dim() != 1 or absmax.numel() != blocks:
        raise KernelInputError(
            f"nf4_dequantize: {n} values in blocks of {NF4_BLOCK} need absmax of shape ({blocks},), got "
            f"{tuple(absmax.shape)}"
        )


def _make_inputs(shape, dtype, device, generator, mode):
    (n,) = shape
    blocks = -(-n // NF4_BLOCK)
    # Every byte value (so every code in both nibbles); absmaxes as quantizing N(0, 1) weights gives, never 0.
    packed = torch.randint(0, 256, (n // 2,), generator=generator, device=generator.device, dtype=torch.int32).to(
        torch.uint8
    )
    absmax = torch.randn((blocks,), generator=generator, device=generator.device, dtype=torch.float32).abs() + 1.0
    return {"packed": packed.to(device), "absmax": absmax.to(device), "shape": (n,), "dtype": dtype}


def _torch_nf4_dequantize(packed, absmax, shape, dtype=torch.bfloat16):
    """In PyTorch: unpack the nibbles, index the codebook, repeat the absmaxes, multiply, cast."""
    codes = unpack_codes(packed)
    codebook = torch.tensor(NF4_CODEBOOK, dtype=torch.float32, device=packed.device)
    block_absmax = absmax.repeat_interleave(NF4_BLOCK)[: codes.numel()]
    return (codebook[codes] * block_absmax).to(dtype).reshape(shape)


SPEC = spec.define(
    spec.OpSpec(
        name="nf4_dequantize",
        signature="nf4_dequantize(packed[n/2] u8, absmax[ceil(n/64)] f32, *, shape, dtype) -> [shape]",
        dims=("n",),
        reference=reference,
        special_values=spec.SpecialValues(inputs=("absmax",), not_applicable={"packed": "4-bit codes packed in uint8"}),
        make_inputs=_make_inputs,
        make_output=lambda i: torch.empty(tuple(i["shape"]), dtype=i["dtype"], device=i["packed"].device),
        problem_shape=lambda i: (_count(i["shape"]),),
        validate=_validate,
        operand_dtype=lambda i: i["dtype"],
        # One byte; three blocks, the last of 2 values; 16 blocks, the last of 40.
        cpu_shapes=[(2,), (130,), (1000,)],
        gpu_shapes=[(2,), (130,), (1000,), (4096 * 4096,), (11008 * 4096 + 66,), (8192 * 8192,)],
        # A Llama-7B MLP weight (11008 x 4096) and an 8192 x 8192 one.
        bench_shapes=[(11008 * 4096,), (8192 * 8192,)],
        # The lookup and the multiply.
        flops=lambda s: 2 * s[0],
        bytes_moved=lambda s, dtype: s[0] // 2 + 4 * -(-s[0] // NF4_BLOCK) + s[0] * dtype.itemsize,
        has_backward=False,
        peers={
            "eager": lambda: _torch_nf4_dequantize,
            "torch.compile": lambda: torch.compile(_torch_nf4_dequantize, dynamic=False),
        },
        default_variant="fused",
    )
)


def nf4_dequantize(
    packed: torch.Tensor,
    absmax: torch.Tensor,
    *,
    shape,
    dtype: torch.dtype = torch.bfloat16,
    variant: str | None = None,
    out: torch.Tensor | None = None,
):
    """NF4 codes times their block's absmax, in ``dtype`` and ``shape``, with a kernelwatch variant (default: fused)."""
    inputs = {"packed": packed, "absmax": absmax, "shape": shape, "dtype": dtype}
    return dispatch.run("nf4_dequantize", inputs, variant=variant, out=out)
