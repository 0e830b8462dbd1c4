"""gelu: elementwise ``x * Phi(x)``, exactly (through erf) or with the tanh approximation.

Modes:
- ``erf``: ``approximate="none"``, ``0.5 * x * (1 + erf(x / sqrt(2)))``.
- ``tanh``: ``approximate="tanh"``, ``0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))``.

x may have any shape; the kernels walk it as one flat run of memory, so it must be contiguous.
"""

from __future__ import annotations

import torch

from kernels import dispatch, spec
from kernels.errors import KernelInputError
from kernels.ops._util import require_floating, require_tensor

APPROXIMATIONS = ("none", "tanh")


def reference(x, approximate="none"):
    return torch.nn.functional.gelu(x, approximate=approximate)


def _validate(inputs: spec.Inputs) -> None:
    x = require_tensor("gelu", "x", inputs["x"])
    require_floating("gelu", "x", x)
    approximate = inputs.get("approximate", "none")
    if approximate not in APPROXIMATIONS:
        raise KernelInputError(f"gelu: approximate must be one of {APPROXIMATIONS}, got {approximate!r}")
    if not x.is_contiguous():
        raise KernelInputError(
            f"gelu: x is not contiguous (shape {tuple(x.shape)}, strides {x.stride()}); "
            "the kernels walk memory linearly, so pass x.contiguous()"
        )


def _mode_of(inputs: spec.Inputs) -> str:
    return "tanh" if inputs.get("approximate") == "tanh" else "erf"


def _make_inputs(shape, dtype, device, generator, mode):
    (n,) = shape
    # Scale 2 puts a third of the values beyond |x| = 2, in both tails where the curve bends (and where the erf
    # and tanh forms differ most), instead of mostly on its near-linear middle.
    return {
        "x": spec.randn((n,), dtype, device, generator, scale=2.0),
        "approximate": "tanh" if mode == "tanh" else "none",
    }


SPEC = spec.define(
    spec.OpSpec(
        name="gelu",
        signature="gelu(x[*], *, approximate='none'|'tanh') -> [*]",
        dims=("n",),
        reference=reference,
        special_values=spec.SpecialValues(inputs=("x",)),
        make_inputs=_make_inputs,
        make_output=lambda i: torch.empty(i["x"].shape, dtype=i["x"].dtype, device=i["x"].device),
        problem_shape=lambda i: (i["x"].numel(),),
        validate=_validate,
        operand_dtype=lambda i: i["x"].dtype,
        # Shapes of several dimensions are flattened the same way; tests/test_gelu.py runs a [3, 5, 7] one.
        cpu_shapes=[(1,), (1000,), (4099,), (9001,)],
        gpu_shapes=[(1,), (98431,), (4096 * 4096,), (4096 * 14336,)],
        # A Llama-3-8B MLP activation for 4096 tokens, and a square one.
        bench_shapes=[(4096 * 4096,), (4096 * 14336,)],
        # erf (or tanh through one exp), plus about ten multiplies and adds.
        flops=lambda s: 12 * s[0],
        bytes_moved=lambda s, dtype: 2 * s[0] * dtype.itemsize,
        has_backward=True,
        grad_inputs=("x",),
        modes=("erf", "tanh"),
        mode_of=_mode_of,
    )
)


def gelu(
    x: torch.Tensor,
    *,
    approximate: str = "none",
    variant: str | None = None,
    out: torch.Tensor | None = None,
):
    """GELU of ``x`` (``approximate="none"`` for the erf form, ``"tanh"`` for the approximation) with a
    kernelwatch variant (default: naive)."""
    return dispatch.run("gelu", {"x": x, "approximate": approximate}, variant=variant, out=out)
