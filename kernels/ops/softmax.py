"""softmax: row-wise softmax over the last dimension."""

from __future__ import annotations

import math

import torch

from kernels import dispatch, peers, spec
from kernels.errors import KernelInputError
from kernels.ops._util import require_floating, require_tensor


def as_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a 2-D [rows, cols] view with unit column stride (the layout every softmax kernel reads)."""
    return x.view(-1, x.shape[-1]) if x.dim() != 2 else x


def _validate(inputs: spec.Inputs) -> None:
    x = require_tensor("softmax", "x", inputs["x"])
    require_floating("softmax", "x", x)
    if x.dim() == 0:
        raise KernelInputError("softmax: x must have at least one dimension, got a scalar")
    if x.numel() and x.shape[-1] > 1 and x.stride(-1) != 1:
        raise KernelInputError(
            f"softmax: the last dimension of x must be contiguous (stride 1), got strides {x.stride()}; "
            "pass x.contiguous()"
        )
    if x.numel():
        try:
            as_rows(x)
        except RuntimeError:
            raise KernelInputError(
                f"softmax: x with shape {tuple(x.shape)} and strides {x.stride()} cannot be read as rows of "
                "equal stride; pass x.contiguous()"
            ) from None


def _shape(inputs: spec.Inputs) -> tuple[int, int]:
    x = inputs["x"]
    cols = x.shape[-1]
    return (math.prod(x.shape[:-1]), cols)


def _make_inputs(shape, dtype, device, generator, mode):
    rows, cols = shape
    # Scale 3 spreads the logits over a realistic range (max minus typical is ~10), so exp() underflows in
    # low precision for some elements and a missing max-subtraction overflows.
    return {"x": spec.randn((rows, cols), dtype, device, generator, scale=3.0)}


SPEC = spec.define(
    spec.OpSpec(
        name="softmax",
        signature="softmax(x[..., cols]) -> [..., cols]   (over the last dim)",
        dims=("rows", "cols"),
        reference=lambda x: torch.softmax(x, dim=-1),
        special_values=spec.SpecialValues(inputs=("x",), masked_rows=("x",)),
        make_inputs=_make_inputs,
        make_output=lambda i: torch.empty(i["x"].shape, dtype=i["x"].dtype, device=i["x"].device),
        problem_shape=_shape,
        validate=_validate,
        operand_dtype=lambda i: i["x"].dtype,
        cpu_shapes=[(1, 1), (7, 129), (33, 1000), (5, 4099), (3, 16411)],
        gpu_shapes=[(1, 1), (37, 1000), (1823, 781), (4096, 4096), (16384, 8192), (64, 65536), (8, 262147)],
        # Attention-score rows (16384 x 8192) and a row as long as a large vocabulary.
        bench_shapes=[(16384, 8192), (4096, 32768), (256, 131072)],
        flops=lambda s: 5 * s[0] * s[1],
        bytes_moved=lambda s, dtype: 2 * s[0] * s[1] * dtype.itemsize,
        has_backward=True,
        grad_inputs=("x",),
        default_variant="autotuned",
        peers={"liger": peers.liger(lambda F: lambda x: F.liger_softmax(x))},
    )
)


def softmax(x: torch.Tensor, *, variant: str | None = None, out: torch.Tensor | None = None):
    """Softmax over the last dimension of ``x`` with a kernelwatch variant (default: autotuned)."""
    return dispatch.run("softmax", {"x": x}, variant=variant, out=out)
