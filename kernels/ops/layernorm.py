"""layernorm: ``(x - mean) / sqrt(var + eps) * weight + bias`` over the last dimension (biased variance), as
``torch.nn.functional.layer_norm`` computes it."""

from __future__ import annotations

import math

import torch

from kernels import dispatch, peers, spec
from kernels.errors import KernelInputError
from kernels.ops._util import require_floating, require_tensor


def as_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a 2-D [rows, cols] view with unit column stride (the layout every layernorm kernel reads)."""
    return x.view(-1, x.shape[-1]) if x.dim() != 2 else x


def check_rows(op: str, name: str, x: torch.Tensor) -> None:
    """``x`` must be readable as rows of equal stride with contiguous columns."""
    if x.dim() == 0:
        raise KernelInputError(f"{op}: {name} must have at least one dimension, got a scalar")
    if x.numel() and x.shape[-1] > 1 and x.stride(-1) != 1:
        raise KernelInputError(
            f"{op}: the last dimension of {name} must be contiguous (stride 1), got strides {x.stride()}; "
            f"pass {name}.contiguous()"
        )
    if x.numel():
        try:
            as_rows(x)
        except RuntimeError:
            raise KernelInputError(
                f"{op}: {name} with shape {tuple(x.shape)} and strides {x.stride()} cannot be read as rows of "
                f"equal stride; pass {name}.contiguous()"
            ) from None


def check_affine(op: str, name: str, t, x: torch.Tensor) -> torch.Tensor:
    """A per-column parameter: shape [cols], unit stride, in x's dtype or float32 (mixed precision)."""
    t = require_tensor(op, name, t)
    require_floating(op, name, t)
    cols = x.shape[-1]
    if t.shape != (cols,):
        raise KernelInputError(
            f"{op}: {name} must have shape [cols] = [{cols}] (the last dimension of x), got {list(t.shape)}"
        )
    if t.dtype not in (x.dtype, torch.float32):
        raise KernelInputError(f"{op}: {name} is {t.dtype}; it must be x's dtype ({x.dtype}) or torch.float32")
    if cols > 1 and t.stride(0) != 1:
        raise KernelInputError(f"{op}: {name} must be contiguous, got stride {t.stride()}; pass {name}.contiguous()")
    return t


def as_float(eps):
    """An integer eps as a float, so that kernels see one fp32 argument type (validation judges the rest)."""
    return float(eps) if isinstance(eps, int) and not isinstance(eps, bool) else eps


def check_eps(op: str, eps) -> None:
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not math.isfinite(eps) or eps < 0:
        raise KernelInputError(f"{op}: eps must be a finite number >= 0, got {eps!r}")


def _validate(inputs: spec.Inputs) -> None:
    x = require_tensor("layernorm", "x", inputs["x"])
    require_floating("layernorm", "x", x)
    check_rows("layernorm", "x", x)
    weight = check_affine("layernorm", "weight", inputs["weight"], x)
    bias = check_affine("layernorm", "bias", inputs["bias"], x)
    if bias.dtype != weight.dtype:
        raise KernelInputError(f"layernorm: weight is {weight.dtype} but bias is {bias.dtype}; they must match")
    check_eps("layernorm", inputs.get("eps", 1e-5))


def _shape(inputs: spec.Inputs) -> tuple[int, int]:
    x = inputs["x"]
    return (math.prod(x.shape[:-1]), x.shape[-1])


def reference(x, weight, bias, eps=1e-5):
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), weight, bias, eps)


def _make_inputs(shape, dtype, device, generator, mode):
    rows, cols = shape
    # A trained norm's weight sits near 1 and its bias near 0; neither exactly, so both gradients are exercised.
    weight = 1.0 + spec.randn((cols,), torch.float32, "cpu", generator, scale=0.1)
    bias = spec.randn((cols,), torch.float32, "cpu", generator, scale=0.1)
    return {
        "x": spec.randn((rows, cols), dtype, device, generator),
        "weight": weight.to(device=device, dtype=dtype),
        "bias": bias.to(device=device, dtype=dtype),
        "eps": 1e-5,
    }


SPEC = spec.define(
    spec.OpSpec(
        name="layernorm",
        signature="layernorm(x[..., cols], weight[cols], bias[cols], *, eps=1e-5) -> [..., cols]   (over the last dim)",
        dims=("rows", "cols"),
        reference=reference,
        special_values=spec.SpecialValues(inputs=("x", "weight", "bias")),
        make_inputs=_make_inputs,
        make_output=lambda i: torch.empty(i["x"].shape, dtype=i["x"].dtype, device=i["x"].device),
        problem_shape=_shape,
        validate=_validate,
        operand_dtype=lambda i: i["x"].dtype,
        # (1, 7): a single short row; (5, 4099): several blocks per row; (3, 16411): wider than any variant holds
        # on chip, so the looping forward paths and the column-split backward run. A single column is left to
        # tests/test_layernorm.py: its variance is 0, so the output is the bias alone.
        cpu_shapes=[(1, 7), (7, 129), (33, 1000), (5, 4099), (3, 16411)],
        gpu_shapes=[(1823, 781), (4096, 4096), (4096, 8192), (2048, 16384), (64, 65536), (16, 262144)],
        bench_shapes=[(4096, 4096), (2048, 16384), (16, 262144)],
        # Mean, centre, square, sum, scale, weight, bias: about 7 per element.
        flops=lambda s: 7 * s[0] * s[1],
        bytes_moved=lambda s, dtype: (2 * s[0] * s[1] + 2 * s[1]) * dtype.itemsize,
        has_backward=True,
        grad_inputs=("x", "weight", "bias"),
        # dweight and dbias sum over rows; this keeps them O(1) (dx, per element, shrinks with it but stays far
        # above the table's atol).
        grad_scale=lambda s: max(s[0], 1) ** -0.5,
        default_variant="welford",
        peers={"liger": peers.liger(lambda F: lambda x, weight, bias, eps: F.liger_layer_norm(x, weight, bias, eps))},
    )
)


def layernorm(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    *,
    eps: float = 1e-5,
    variant: str | None = None,
    out: torch.Tensor | None = None,
):
    """Layer normalization over the last dimension of ``x`` with a kernelwatch variant (default: welford)."""
    inputs = {"x": x, "weight": weight, "bias": bias, "eps": as_float(eps)}
    return dispatch.run("layernorm", inputs, variant=variant, out=out)
