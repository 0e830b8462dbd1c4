"""add: elementwise ``x + y``. The smallest op, to show what a variant needs."""

from __future__ import annotations

import torch

from kernels import dispatch, spec
from kernels.errors import KernelInputError
from kernels.ops._util import require_floating, require_same_dtype, require_tensor


def _validate(inputs: spec.Inputs) -> None:
    x = require_tensor("add", "x", inputs["x"])
    y = require_tensor("add", "y", inputs["y"])
    require_floating("add", "x", x)
    require_same_dtype("add", x=x, y=y)
    if x.shape != y.shape:
        raise KernelInputError(f"add: x has shape {tuple(x.shape)} but y has {tuple(y.shape)}; no broadcasting")
    for name, t in (("x", x), ("y", y)):
        if not t.is_contiguous():
            raise KernelInputError(
                f"add: {name} is not contiguous (shape {tuple(t.shape)}, strides {t.stride()}); "
                "the kernel walks memory linearly, so pass .contiguous()"
            )


def _make_inputs(shape, dtype, device, generator, mode):
    (n,) = shape
    return {"x": spec.randn((n,), dtype, device, generator), "y": spec.randn((n,), dtype, device, generator)}


SPEC = spec.define(
    spec.OpSpec(
        name="add",
        signature="add(x[*], y[*]) -> [*]",
        dims=("n",),
        reference=lambda x, y: x + y,
        special_values=spec.SpecialValues(inputs=("x", "y")),
        make_inputs=_make_inputs,
        make_output=lambda i: torch.empty(i["x"].shape, dtype=i["x"].dtype, device=i["x"].device),
        problem_shape=lambda i: (i["x"].numel(),),
        validate=_validate,
        operand_dtype=lambda i: i["x"].dtype,
        cpu_shapes=[(1,), (1000,), (4099,)],
        gpu_shapes=[(1,), (1000,), (98431,), (1 << 24,), (1 << 28,)],
        bench_shapes=[(1 << 24,), (1 << 28,)],
        flops=lambda s: s[0],
        bytes_moved=lambda s, dtype: 3 * s[0] * dtype.itemsize,
        has_backward=True,
        grad_inputs=("x", "y"),
    )
)


def add(x: torch.Tensor, y: torch.Tensor, *, variant: str | None = None, out: torch.Tensor | None = None):
    """``x + y`` with a kernelwatch variant (default: naive)."""
    return dispatch.run("add", {"x": x, "y": y}, variant=variant, out=out)
