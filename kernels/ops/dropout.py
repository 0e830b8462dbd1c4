"""dropout: keep each element of ``x`` with probability ``1 - p`` and scale the kept ones by ``1 / (1 - p)``.

The random mask is Philox: the element at linear index ``i = 4g + j`` is kept when number ``j`` of
``tl.rand4x(seed, g)`` is at least ``p`` (variants/dropout/_mask.py). It is a pure function of the seed and the
position, so every variant draws the same mask for the same seed (and their results are compared), and a backward
can regenerate it instead of storing it.

Which elements are dropped is the kernel's choice, so the reference takes the kernel's output and checks
everything else against it: kept elements are exactly ``x / (1 - p)`` and dropped ones exactly 0 (``x`` is
never 0 in the generated inputs, so ``out != 0`` is the kept set). tests/test_dropout.py checks the choice
itself: the kept fraction, the seed, and that backward uses the forward's mask.

x may have any shape; the kernels walk it as one flat run of memory, so it must be contiguous.
"""

from __future__ import annotations

import math
import numbers

import torch

from kernels import dispatch, spec
from kernels.errors import KernelInputError
from kernels.ops._util import require_floating, require_tensor

# The seed goes to Philox as a uint64 key; non-negative int64 values reach the kernel unchanged on every backend.
SEED_RANGE = (0, 2**63 - 1)


def reference(x, p, seed, out):
    """``x`` where ``out`` kept it, scaled by ``1 / (1 - p)``; ``x * 0`` where ``out`` dropped it: 0 for a finite
    ``x``, NaN for a NaN or an infinity, as torch's dropout gives. A dropped infinity is the one NaN in ``out`` whose
    ``x`` is not NaN, so it is read as dropped."""
    kept = (out != 0) & ~(torch.isinf(x) & torch.isnan(out))
    return x * kept.to(x.dtype) / (1.0 - p)


def _validate(inputs: spec.Inputs) -> None:
    x = require_tensor("dropout", "x", inputs["x"])
    require_floating("dropout", "x", x)
    if not x.is_contiguous():
        raise KernelInputError(
            f"dropout: x is not contiguous (shape {tuple(x.shape)}, strides {x.stride()}); "
            "the kernels walk memory linearly (the mask is a function of the linear index), so pass x.contiguous()"
        )
    p = inputs["p"]
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise KernelInputError(f"dropout: p must be a float in [0, 1), got {type(p).__name__} {p!r}")
    if not 0.0 <= p < 1.0:
        # p = 1 would drop everything and scale by 1/0; NaN fails both comparisons and lands here too.
        raise KernelInputError(f"dropout: p must be in [0, 1), got {p!r}")
    seed = inputs["seed"]
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise KernelInputError(f"dropout: seed must be an int, got {type(seed).__name__} {seed!r}")
    low, high = SEED_RANGE
    if not low <= seed <= high:
        raise KernelInputError(f"dropout: seed must be in [{low}, 2**63 - 1], got {seed}")


def _make_inputs(shape, dtype, device, generator, mode):
    (n,) = shape
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))
    return {"x": spec.randn((n,), dtype, device, generator), "p": 0.3, "seed": seed}


def _eager(x, p, seed):
    # torch's own RNG draws a different mask; the peer is timed, never compared.
    return torch.nn.functional.dropout(x, p=p, training=True)


SPEC = spec.define(
    spec.OpSpec(
        name="dropout",
        signature="dropout(x[*], *, p, seed) -> [*]   (keep with probability 1 - p, scale by 1 / (1 - p))",
        dims=("n",),
        reference=reference,
        special_values=spec.SpecialValues(inputs=("x",)),
        make_inputs=_make_inputs,
        make_output=lambda i: torch.empty(i["x"].shape, dtype=i["x"].dtype, device=i["x"].device),
        problem_shape=lambda i: (math.prod(i["x"].shape),),
        validate=_validate,
        operand_dtype=lambda i: i["x"].dtype,
        # 4099 and 9001 end in a partial block; tests/test_dropout.py runs larger and multi-dimensional ones.
        cpu_shapes=[(1,), (1000,), (4099,), (9001,)],
        gpu_shapes=[(1,), (98431,), (4096 * 4096,), (4096 * 14336,)],
        bench_shapes=[(4096 * 4096,), (4096 * 14336,)],
        # One multiply per element; Philox's ten rounds of integer work are not counted as flops.
        flops=lambda s: s[0],
        bytes_moved=lambda s, dtype: 2 * s[0] * dtype.itemsize,
        has_backward=True,
        grad_inputs=("x",),
        # dy read and dx written; the mask is regenerated from the seed, and x is not needed.
        backward_bytes=lambda i: 2 * spec.nbytes(i["x"]),
        reference_needs_output=True,
        default_variant="seeded",
        peers={
            "eager": lambda: _eager,
            "torch.compile": lambda: torch.compile(_eager, dynamic=False),
        },
    )
)


def dropout(
    x: torch.Tensor,
    *,
    p: float,
    seed: int,
    variant: str | None = None,
    out: torch.Tensor | None = None,
):
    """Dropout of ``x`` with drop probability ``p`` and a Philox mask drawn from ``seed``, with a kernelwatch
    variant (default: seeded). The same seed gives the same mask in every variant and in backward."""
    return dispatch.run("dropout", {"x": x, "p": p, "seed": seed}, variant=variant, out=out)
