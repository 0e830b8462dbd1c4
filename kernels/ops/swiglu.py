"""swiglu: the gated activation of SwiGLU MLPs, ``silu(gate) * up`` elementwise, with ``silu(g) = g * sigmoid(g)``.

gate and up have one shape (any) and must be contiguous: the kernels walk them as flat runs of memory. Halves
of a fused gate/up projection (``x.chunk(2, -1)``) are strided views; pass them ``.contiguous()``.
"""

from __future__ import annotations

import torch

from kernels import dispatch, spec
from kernels.errors import KernelInputError
from kernels.ops._util import require_floating, require_same_dtype, require_tensor


def reference(gate, up):
    return torch.nn.functional.silu(gate) * up


def _validate(inputs: spec.Inputs) -> None:
    gate = require_tensor("swiglu", "gate", inputs["gate"])
    up = require_tensor("swiglu", "up", inputs["up"])
    require_floating("swiglu", "gate", gate)
    require_same_dtype("swiglu", gate=gate, up=up)
    if gate.shape != up.shape:
        raise KernelInputError(
            f"swiglu: gate has shape {tuple(gate.shape)} but up has {tuple(up.shape)}; no broadcasting"
        )
    for name, t in (("gate", gate), ("up", up)):
        if not t.is_contiguous():
            raise KernelInputError(
                f"swiglu: {name} is not contiguous (shape {tuple(t.shape)}, strides {t.stride()}); "
                f"the kernels walk memory linearly, so pass {name}.contiguous()"
            )


def _make_inputs(shape, dtype, device, generator, mode):
    (n,) = shape
    # Scale 2 on gate reaches well into both tails of silu (its minimum is at -1.28), not only its middle.
    return {
        "gate": spec.randn((n,), dtype, device, generator, scale=2.0),
        "up": spec.randn((n,), dtype, device, generator),
    }


SPEC = spec.define(
    spec.OpSpec(
        name="swiglu",
        signature="swiglu(gate[*], up[*]) -> [*]   (silu(gate) * up)",
        dims=("n",),
        reference=reference,
        special_values=spec.SpecialValues(inputs=("gate", "up")),
        make_inputs=_make_inputs,
        make_output=lambda i: torch.empty(i["gate"].shape, dtype=i["gate"].dtype, device=i["gate"].device),
        problem_shape=lambda i: (i["gate"].numel(),),
        validate=_validate,
        operand_dtype=lambda i: i["gate"].dtype,
        # Shapes of several dimensions are flattened the same way; tests/test_swiglu.py runs a [3, 5, 7] one.
        cpu_shapes=[(1,), (1000,), (4099,), (9001,)],
        gpu_shapes=[(1,), (98431,), (4096 * 4096,), (4096 * 14336,)],
        bench_shapes=[(4096 * 4096,), (4096 * 14336,)],
        # exp, add, divide, and two multiplies.
        flops=lambda s: 5 * s[0],
        bytes_moved=lambda s, dtype: 3 * s[0] * dtype.itemsize,
        has_backward=True,
        grad_inputs=("gate", "up"),
    )
)


def swiglu(gate: torch.Tensor, up: torch.Tensor, *, variant: str | None = None, out: torch.Tensor | None = None):
    """``silu(gate) * up`` with a kernelwatch variant (default: naive)."""
    return dispatch.run("swiglu", {"gate": gate, "up": up}, variant=variant, out=out)
