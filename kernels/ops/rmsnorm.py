"""rmsnorm: ``x * rsqrt(mean(x^2) + eps) * weight`` over the last dimension.

Modes:
- ``default``: the normalized output.
- ``residual``: with a ``residual`` given, ``s = x + residual`` is normalized instead, and the op returns the tuple
  ``(rmsnorm(s) * weight, s)``: a transformer block's pre-norm, which also hands the sum on as the next residual.
  The normalized output is that of the exact sum (as the float64 reference computes it), not of ``s`` rounded to
  the output dtype.
"""

from __future__ import annotations

import math

import torch

from kernels import dispatch, peers, registry, spec
from kernels.errors import KernelInputError
from kernels.ops._util import require_floating, require_tensor
from kernels.ops.layernorm import as_float, as_rows, check_affine, check_eps, check_rows

__all__ = ["as_rows", "reference", "rmsnorm"]

# The variants tried, in order, for residual inputs when no variant is named (the op's default takes none).
RESIDUAL_PREFERENCE = ("fused_residual", "naive")


def reference(x, weight, eps=1e-6, residual=None):
    s = x if residual is None else x + residual
    y = s * torch.rsqrt(s.pow(2).mean(dim=-1, keepdim=True) + eps) * weight
    return y if residual is None else (y, s)


def _validate(inputs: spec.Inputs) -> None:
    x = require_tensor("rmsnorm", "x", inputs["x"])
    require_floating("rmsnorm", "x", x)
    check_rows("rmsnorm", "x", x)
    check_affine("rmsnorm", "weight", inputs["weight"], x)
    check_eps("rmsnorm", inputs.get("eps", 1e-6))
    residual = inputs.get("residual")
    if residual is not None:
        require_tensor("rmsnorm", "residual", residual)
        if residual.shape != x.shape:
            raise KernelInputError(
                f"rmsnorm: residual must have the shape of x, {list(x.shape)}, got {list(residual.shape)}"
            )
        if residual.dtype != x.dtype:
            raise KernelInputError(f"rmsnorm: x is {x.dtype} but residual is {residual.dtype}; they must match")
        check_rows("rmsnorm", "residual", residual)


def _shape(inputs: spec.Inputs) -> tuple[int, int]:
    x = inputs["x"]
    return (math.prod(x.shape[:-1]), x.shape[-1])


def _mode_of(inputs: spec.Inputs) -> str:
    return "default" if inputs.get("residual") is None else "residual"


def _make_output(inputs: spec.Inputs):
    x = inputs["x"]
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if inputs.get("residual") is None:
        return y
    return y, torch.empty(x.shape, dtype=x.dtype, device=x.device)


def _make_inputs(shape, dtype, device, generator, mode):
    rows, cols = shape
    # A trained norm's weight sits near 1, never exactly, so dweight is exercised.
    weight = 1.0 + spec.randn((cols,), torch.float32, "cpu", generator, scale=0.1)
    inputs = {
        "x": spec.randn((rows, cols), dtype, device, generator),
        "weight": weight.to(device=device, dtype=dtype),
        "eps": 1e-6,
    }
    if mode == "residual":
        inputs["residual"] = spec.randn((rows, cols), dtype, device, generator)
    return inputs


def _liger(F):
    # Liger's RMSNorm takes no residual: the sum is left to an eager add, as a model using it would do.
    def run(x, weight, eps, residual=None):
        if residual is None:
            return F.liger_rms_norm(x, weight, eps)
        s = x + residual
        return F.liger_rms_norm(s, weight, eps), s

    return run


SPEC = spec.define(
    spec.OpSpec(
        name="rmsnorm",
        signature="rmsnorm(x[..., cols], weight[cols], *, eps=1e-6, residual[..., cols]=None) -> [..., cols], "
        "or (out, x + residual) with a residual   (over the last dim)",
        dims=("rows", "cols"),
        reference=reference,
        special_values=spec.SpecialValues(inputs=("x", "weight", "residual")),
        make_inputs=_make_inputs,
        make_output=_make_output,
        problem_shape=_shape,
        validate=_validate,
        operand_dtype=lambda i: i["x"].dtype,
        # (5, 4099): several blocks per row; (3, 16411): past autotuned's one-pass limit and the backward's on-chip
        # one, so the span and column-split paths run. No single column: there dx = rstd * g * eps / (x^2 + eps)
        # is all cancellation, ill-conditioned for any fp32 kernel where |x| is small; tests/test_rmsnorm.py checks
        # its forward.
        cpu_shapes=[(1, 7), (7, 129), (33, 1000), (5, 4099), (3, 16411)],
        gpu_shapes=[(1823, 781), (4096, 4096), (4096, 8192), (2048, 16384), (64, 65536), (16, 262144)],
        bench_shapes=[(4096, 4096), (2048, 16384), (16, 262144)],
        # Square, sum, rsqrt, scale, weight: about 4 per element.
        flops=lambda s: 4 * s[0] * s[1],
        # The default mode: x read, out written, the weight read once.
        bytes_moved=lambda s, dtype: (2 * s[0] * s[1] + s[1]) * dtype.itemsize,
        # The residual mode moves twice as much: x and the residual read, the output and the sum written.
        forward_bytes=lambda i: (
            spec.nbytes(i["x"]) * (4 if i.get("residual") is not None else 2) + spec.nbytes(i["weight"])
        ),
        has_backward=True,
        grad_inputs=("x", "weight", "residual"),
        # dweight sums over rows; this keeps it O(1) (dx, per element, shrinks with it but stays far above the
        # table's atol).
        grad_scale=lambda s: max(s[0], 1) ** -0.5,
        modes=("default", "residual"),
        mode_of=_mode_of,
        default_variant="autotuned",
        peers={"liger": peers.liger(_liger)},
    )
)


def _residual_variant(x: torch.Tensor) -> str:
    shape = (math.prod(x.shape[:-1]), x.shape[-1]) if x.dim() else (1, 1)
    for name in RESIDUAL_PREFERENCE:
        if registry.get("rmsnorm", name).unsupported_shape(shape) is None:
            return name
    return RESIDUAL_PREFERENCE[-1]


def rmsnorm(
    x: torch.Tensor,
    weight: torch.Tensor,
    *,
    eps: float = 1e-6,
    residual: torch.Tensor | None = None,
    variant: str | None = None,
    out: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None,
):
    """RMS normalization over the last dimension of ``x`` with a kernelwatch variant; with ``residual``, of
    ``s = x + residual``, returning ``(out, s)``. Default: autotuned, or for residual inputs fused_residual
    where the row fits on chip and naive where it does not."""
    inputs = {"x": x, "weight": weight, "eps": as_float(eps)}
    if residual is not None:
        inputs["residual"] = residual
        if variant is None and isinstance(x, torch.Tensor):
            variant = _residual_variant(x)
    return dispatch.run("rmsnorm", inputs, variant=variant, out=out)
