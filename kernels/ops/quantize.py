"""quantize: x -> (q, scale) in int8, fp8 e4m3 or fp8 e5m2, with one scale per tensor, row or 1 x 128 block.

    q[rows, cols], scale[1, 1] | [rows, 1] | [rows, cols / 128] = quantize(x[rows, cols], qdtype=..., granularity=...)

x is fp32, fp16 or bf16 with contiguous columns (any row stride). ``scale = absmax / FMAX`` per group (FMAX is 127,
448 or 57344) and ``q = round_to_nearest_even(x / scale)``, saturated, with x / scale formed as x times the fp32
reciprocal of the scale: the exact rule, with NaN, inf and the smallest scale, is in kernels/ops/_quant.py. Modes
are ``<format>_<granularity>``, e.g. ``int8_row``, ``e4m3_block``, ``e5m2_tensor``.
Quantization has no gradient (its derivative is zero almost everywhere), so the op has no backward.
"""

from __future__ import annotations

import torch

from kernels import dispatch, spec, tolerance
from kernels.errors import KernelInputError
from kernels.ops import _quant
from kernels.ops._util import require_floating, require_tensor


def reference(x, qdtype=torch.float8_e4m3fn, granularity="row"):
    return _quant.reference_quantize(x, _quant.FORMAT_OF[qdtype], granularity)


def _validate(inputs: spec.Inputs) -> None:
    x = require_tensor("quantize", "x", inputs["x"])
    require_floating("quantize", "x", x)
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise KernelInputError(f"quantize: x must be float32, float16 or bfloat16, got {x.dtype}")
    qdtype = inputs["qdtype"]
    if qdtype not in _quant.FORMAT_OF:
        names = ", ".join(str(d) for d in _quant.FORMATS.values())
        raise KernelInputError(f"quantize: qdtype must be one of {names}, got {qdtype!r}")
    _quant.check_granularity("quantize", inputs["granularity"])
    _quant.check_rows("quantize", "x", x, inputs["granularity"])


def _make_inputs(shape, dtype, device, generator, mode):
    fmt, granularity = _quant.split_mode(mode)
    # Scale 3: groups of different absmax, and for row and block scales absmaxes that differ from group to group.
    return {
        "x": spec.randn(shape, dtype, device, generator, scale=3.0),
        "qdtype": _quant.FORMATS[fmt],
        "granularity": granularity,
    }


def _make_output(inputs):
    x = inputs["x"]
    rows, cols = x.shape
    shape = _quant.scale_shape(rows, cols, inputs["granularity"])
    return (
        torch.empty((rows, cols), dtype=inputs["qdtype"], device=x.device),
        torch.empty(shape, dtype=torch.float32, device=x.device),
    )


def _bytes(shape, dtype, granularity="row"):
    rows, cols = shape
    groups = {"tensor": 1, "row": rows, "block": rows * (cols // _quant.BLOCK)}[granularity]
    return rows * cols * (dtype.itemsize + 1) + 4 * groups


def _torch_quantize(x, qdtype=torch.float8_e4m3fn, granularity="row"):
    """What a PyTorch user writes: x.abs().amax, a divide, a clamp and a cast (rounding and NaN as torch's cast)."""
    fmt = _quant.FORMAT_OF[qdtype]
    rows, cols = x.shape
    xf = x.float()
    if granularity == "block":
        amax = xf.abs().view(rows, cols // _quant.BLOCK, _quant.BLOCK).amax(dim=2)
    elif granularity == "row":
        amax = xf.abs().amax(dim=1, keepdim=True)
    else:
        amax = xf.abs().amax().reshape(1, 1)
    scale = amax.clamp(min=torch.finfo(torch.float32).tiny) / _quant.FMAX[fmt]
    q = (xf / _quant.expand_scale(scale, cols, granularity)).clamp(-_quant.FMAX[fmt], _quant.FMAX[fmt])
    return (q.round() if fmt == "int8" else q).to(qdtype), scale


# The codes are compared exactly: the reference forms the same fp32 quotient and rounds it once (see _quant).
_EXACT = "the float64 reference forms the kernels' fp32 quotient x / scale exactly and rounds it once, to nearest even"

SPEC = spec.define(
    spec.OpSpec(
        name="quantize",
        signature="quantize(x[rows,cols], *, qdtype, granularity) -> (q[rows,cols], scale[1|rows, 1|cols/128])",
        dims=("rows", "cols"),
        reference=reference,
        special_values=spec.SpecialValues(inputs=("x",)),
        make_inputs=_make_inputs,
        make_output=_make_output,
        problem_shape=lambda i: tuple(i["x"].shape),
        validate=_validate,
        operand_dtype=lambda i: i["x"].dtype,
        # Columns are multiples of 128 so that every mode, block included, takes every shape; odd row counts and a
        # single row; tests/test_quantize.py covers ragged columns for row and tensor scales.
        cpu_shapes=[(1, 128), (7, 384), (33, 256)],
        gpu_shapes=[(1, 128), (37, 1024), (1823, 896), (4096, 4096), (8192, 8192), (3, 65536)],
        # An 8192 x 8192 activation or weight, as issue 5 asks.
        bench_shapes=[(8192, 8192)],
        # |x|, the max, one divide and the rounding per element.
        flops=lambda s: 4 * s[0] * s[1],
        # Row scales (the bench's mode): x read once, q written once, one fp32 scale per row.
        bytes_moved=lambda s, dtype: _bytes(s, dtype),
        has_backward=False,
        modes=_quant.MODES,
        mode_of=lambda i: _quant.mode(_quant.FORMAT_OF.get(i["qdtype"], "?"), i["granularity"]),
        peers={
            "eager": lambda: _torch_quantize,
            "torch.compile": lambda: torch.compile(_torch_quantize, dynamic=False),
        },
        tolerance_overrides={
            dtype: tolerance.override(atol=0.0, rtol=0.0, reason=_EXACT)
            for dtype in (torch.int8, torch.float8_e4m3fn, torch.float8_e5m2)
        },
        default_variant="fused",
    )
)


def quantize(
    x: torch.Tensor,
    *,
    qdtype: torch.dtype = torch.float8_e4m3fn,
    granularity: str = "row",
    variant: str | None = None,
    out: tuple[torch.Tensor, torch.Tensor] | None = None,
):
    """``(q, scale)`` with ``x ~= q * scale`` per group, with a kernelwatch variant (default: fused)."""
    return dispatch.run("quantize", {"x": x, "qdtype": qdtype, "granularity": granularity}, variant=variant, out=out)
