"""Host-side cost per call of every variant, at the op's smallest GPU shape, where the kernel itself takes a few
microseconds and what the host does dominates: argument checks, output allocation, autotune lookups and the
launch. Each call goes through the public entry point and ends with a synchronize, so the wall time is what a
user waits for. Beside them, the floor of PyTorch itself: a plain ``torch.add`` and the op's eager reference at the
same shape.

Run with ``nox -s bench-host`` on a GPU (never in the unit suite: timing is not a unit test). This directory has
no __init__.py, so asv's discovery of benchmarks/ does not see it.
"""

from __future__ import annotations

import math

import pytest
import torch

from kernels import backend, benchsuite, cases, dispatch, registry, spec
from kernels.dtypes import short

registry.discover()
if backend.name() != "cuda":
    pytest.exit("bench-host times host overhead on a CUDA GPU; none is visible", returncode=2)


def _tiny_case(v: registry.Variant) -> cases.Case | None:
    """The variant's case at its op's smallest GPU shape it supports, in bf16 where it can, timed as asv times it."""
    dtype = next((d for d in (torch.bfloat16, *v.dtypes) if d in v.dtypes), None)
    for shape in sorted(v.spec.gpu_shapes, key=math.prod):
        case = benchsuite.grid_case(v, shape, dtype)
        if cases.support(case, machine=False) is None:
            return case
    return None


CASES = [
    pytest.param(
        c.variant,
        c.shape,
        c.dtype,
        c.mode,
        id=f"{c.variant.key}-v{c.variant.version}-{short(c.dtype)}-{cases.shape_label(c.shape)}",
    )
    for c in map(_tiny_case, registry.all_variants())
    if c is not None and cases.support(c) is None
]


def _inputs(op_spec: spec.OpSpec, shape, dtype, mode):
    return op_spec.make_inputs(shape, dtype, backend.device(), torch.Generator().manual_seed(0), mode)


@pytest.mark.parametrize(("variant", "shape", "dtype", "mode"), CASES)
def test_variant_call(benchmark, variant, shape, dtype, mode):
    inputs = _inputs(variant.spec, shape, dtype, mode)

    def call():
        dispatch.run(variant.op, inputs, variant=variant.name)
        torch.cuda.synchronize()

    call()  # compile and autotune outside the timing
    benchmark.extra_info.update(op=variant.op, variant=variant.name, version=variant.version, shape=list(shape))
    benchmark(call)


@pytest.mark.parametrize("op", sorted(op for op in spec.OPS if registry.variants_of(op)))
def test_eager_reference(benchmark, op):
    """The op's PyTorch reference on the same inputs: eager PyTorch's floor for this op."""
    op_spec = spec.get(op)
    first = registry.variants_of(op)[0]
    case = _tiny_case(first)
    inputs = _inputs(op_spec, *case)
    extra = {"out": dispatch.allocate_poisoned(op, inputs)} if op_spec.reference_needs_output else {}

    def call():
        op_spec.reference(**inputs, **extra)
        torch.cuda.synchronize()

    call()
    benchmark.extra_info.update(op=op, variant="eager", shape=list(case[0]))
    benchmark(call)


def test_torch_add(benchmark):
    """The floor of any launch from Python: one tiny torch op and a synchronize."""
    x = torch.randn(1000, device="cuda")
    y = torch.randn(1000, device="cuda")

    def call():
        torch.add(x, y)
        torch.cuda.synchronize()

    call()
    benchmark(call)
