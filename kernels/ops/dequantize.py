"""dequantize: (q, scale) -> x = q * scale, the inverse of quantize, for the same nine modes.

    x[rows, cols] = dequantize(q[rows, cols], scale[1, 1] | [rows, 1] | [rows, cols / 128], granularity=..., dtype=...)

q is int8, torch.float8_e4m3fn or torch.float8_e5m2 with contiguous columns; scale is fp32 in quantize's layout
(kernels/ops/_quant.py). The product is formed in fp32 (exact for int8 and fp8 codes times an fp32 scale up to
fp32's rounding) and rounded once to ``dtype`` (fp32, fp16 or bf16). NaN codes, and e5m2's infinities, come out as
NaN and inf. No backward: nothing trains through a dequantization of frozen codes.
"""

from __future__ import annotations

import torch

from kernels import dispatch, spec
from kernels.dtypes import FLOATS
from kernels.errors import KernelInputError
from kernels.ops import _quant
from kernels.ops._util import require_tensor


def reference(q, scale, granularity="row", dtype=torch.bfloat16):
    return _quant.reference_dequantize(q, scale, granularity)


def _validate(inputs: spec.Inputs) -> None:
    q = require_tensor("dequantize", "q", inputs["q"])
    scale = require_tensor("dequantize", "scale", inputs["scale"])
    if q.dtype not in _quant.FORMAT_OF:
        names = ", ".join(str(d) for d in _quant.FORMATS.values())
        raise KernelInputError(f"dequantize: q must be one of {names}, got {q.dtype}")
    if scale.dtype != torch.float32:
        raise KernelInputError(f"dequantize: scale must be torch.float32, got {scale.dtype}")
    if inputs["dtype"] not in FLOATS:
        raise KernelInputError(f"dequantize: dtype must be torch.float32, float16 or bfloat16, got {inputs['dtype']!r}")
    granularity = inputs["granularity"]
    _quant.check_granularity("dequantize", granularity)
    _quant.check_rows("dequantize", "q", q, granularity)
    want = _quant.scale_shape(*q.shape, granularity)
    if tuple(scale.shape) != want:
        raise KernelInputError(
            f"dequantize: scale has shape {tuple(scale.shape)}, but {granularity} granularity of q with shape "
            f"{tuple(q.shape)} needs {want}"
        )
    if not scale.is_contiguous():
        raise KernelInputError(f"dequantize: scale must be contiguous, got strides {scale.stride()}")


def random_codes(shape, qdtype, device, generator):
    """Random codes over the format's whole range (fp8: every finite byte, subnormals included), never 0, NaN or
    inf: int8 uniform in [-127, 127], fp8 uniform bytes with the non-finite and zero ones replaced by 1.0."""
    if qdtype == torch.int8:
        q = torch.randint(-127, 128, shape, generator=generator, device=generator.device, dtype=torch.int32)
        return torch.where(q == 0, torch.ones_like(q), q).to(torch.int8).to(device)
    byte = torch.randint(0, 256, shape, generator=generator, device=generator.device, dtype=torch.int32).to(torch.uint8)
    value = byte.view(qdtype).float()
    one = torch.ones(shape, dtype=torch.float32, device=byte.device).to(qdtype).view(torch.uint8)
    return torch.where(torch.isfinite(value) & (value != 0), byte, one).view(qdtype).to(device)


def _make_inputs(shape, dtype, device, generator, mode):
    fmt, granularity = _quant.split_mode(mode)
    rows, cols = shape
    qdtype = _quant.FORMATS[fmt]
    # Scales as quantize makes them for data of absmax about 1 to 4: outputs are O(1).
    draw = torch.randn(
        _quant.scale_shape(rows, cols, granularity), generator=generator, device=generator.device, dtype=torch.float32
    )
    scale = (draw.abs() + 1.0) / _quant.FMAX[fmt]
    return {
        "q": random_codes(shape, qdtype, device, generator),
        "scale": scale.to(device),
        "granularity": granularity,
        "dtype": dtype,
    }


def _torch_dequantize(q, scale, granularity="row", dtype=torch.bfloat16):
    """What a PyTorch user writes: an upcast, a (broadcast or repeated) multiply and a cast."""
    return (q.float() * _quant.expand_scale(scale, q.shape[1], granularity)).to(dtype)


SPEC = spec.define(
    spec.OpSpec(
        name="dequantize",
        signature="dequantize(q[rows,cols], scale[1|rows, 1|cols/128], *, granularity, dtype) -> [rows,cols]",
        dims=("rows", "cols"),
        reference=reference,
        special_values=spec.SpecialValues(
            inputs=("scale",),
            not_applicable={
                "q": "quantized codes: their NaN encodings are the quantizer's output, tested with quantize"
            },
        ),
        make_inputs=_make_inputs,
        make_output=lambda i: torch.empty(tuple(i["q"].shape), dtype=i["dtype"], device=i["q"].device),
        problem_shape=lambda i: tuple(i["q"].shape),
        validate=_validate,
        # The variants' dtypes contract is on what they write.
        operand_dtype=lambda i: i["dtype"],
        cpu_shapes=[(1, 128), (7, 384), (33, 256)],
        gpu_shapes=[(1, 128), (37, 1024), (1823, 896), (4096, 4096), (8192, 8192), (3, 65536)],
        bench_shapes=[(8192, 8192)],
        # The decode and the multiply per element.
        flops=lambda s: 2 * s[0] * s[1],
        # Row scales (the bench's mode): q read once, one fp32 scale per row, x written once.
        bytes_moved=lambda s, dtype: s[0] * s[1] * (1 + dtype.itemsize) + 4 * s[0],
        has_backward=False,
        modes=_quant.MODES,
        mode_of=lambda i: _quant.mode(_quant.FORMAT_OF.get(i["q"].dtype, "?"), i["granularity"]),
        peers={
            "eager": lambda: _torch_dequantize,
            "torch.compile": lambda: torch.compile(_torch_dequantize, dynamic=False),
        },
        default_variant="fused",
    )
)


def dequantize(
    q: torch.Tensor,
    scale: torch.Tensor,
    *,
    granularity: str = "row",
    dtype: torch.dtype = torch.bfloat16,
    variant: str | None = None,
    out: torch.Tensor | None = None,
):
    """``q * scale`` per group in ``dtype``, with a kernelwatch variant (default: fused)."""
    inputs = {"q": q, "scale": scale, "granularity": granularity, "dtype": dtype}
    return dispatch.run("dequantize", inputs, variant=variant, out=out)
