"""Every registered variant, against its op's float64 reference. Parametrized from the registry."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from kernels import backend, cases, dispatch, gradients, memory, registry, spec
from kernels.tolerance import check_close

registry.discover()
WHERE = backend.name()
ALL = cases.cases(WHERE)
BACKWARD = cases.cases(WHERE, direction="bwd")
# Only cases the op's naive variant can also run are comparable with it.
VS_NAIVE = [
    c
    for c in ALL
    if c.variant.name != "naive"
    and c.spec.comparable_to_naive
    and cases.support(dataclasses.replace(c, variant=registry.get(c.op, "naive")), machine=False) is None
]
DETERMINISTIC = [c for c in ALL if c.variant.deterministic]


def _ids(case: cases.Case) -> str:
    return case.id


def _tuple(x) -> tuple[torch.Tensor, ...]:
    return x if isinstance(x, tuple) else (x,)


def _run(case: cases.Case, inputs: spec.Inputs, variant: str | None = None) -> tuple[torch.Tensor, ...]:
    """Run with every buffer the kernel allocates poisoned with NaN, into NaN-filled outputs."""
    out = dispatch.allocate_poisoned(case.op, inputs)
    with memory.poisoned():
        result = dispatch.run(case.op, inputs, variant=variant or case.variant.name, out=out)
    for got, given in zip(_tuple(result), _tuple(out), strict=True):
        assert got.data_ptr() == given.data_ptr(), f"{case.variant.key} did not write into the out it was given"
    return _tuple(result)


def _reference(case: cases.Case, inputs: spec.Inputs, out: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    extra = {"out": out if len(out) > 1 else out[0]} if case.spec.reference_needs_output else {}
    return _tuple(case.spec.reference(**spec.upcast(inputs), **extra))


def _hint(case: cases.Case) -> str:
    return f"{case.id} (reproduce with {cases.SEED_ENV}={cases.session_seed()})"


def _what(case: cases.Case, i: int, n: int) -> str:
    return _hint(case) if n == 1 else f"output {i} of {_hint(case)}"


@pytest.mark.parametrize("case", ALL, ids=_ids)
def test_matches_reference(case: cases.Case) -> None:
    inputs = case.inputs()
    out = _run(case, inputs)
    for i, (got, want) in enumerate(zip(out, _reference(case, inputs, out), strict=True)):
        check_close(got, want, case.spec.tolerance(got.dtype, case.dtype), what=_what(case, i, len(out)))


@pytest.mark.parametrize("case", BACKWARD, ids=_ids)
def test_backward(case: cases.Case) -> None:
    inputs = case.inputs()
    for name in gradients.differentiable(case.spec, inputs):
        inputs[name] = inputs[name].detach().requires_grad_()
    with memory.poisoned():
        out = _tuple(dispatch.run(case.op, inputs, variant=case.variant.name))
    scale = case.spec.grad_scale(case.shape)
    grad_outs = tuple(
        spec.randn(tuple(o.shape), o.dtype, o.device, case.generator(f"grad{i}", o.device), scale=scale)
        for i, o in enumerate(out)
    )
    torch.autograd.backward(out, grad_outs)

    wanted = gradients.reference(case.spec, inputs, out, grad_outs)
    for name, want in wanted.items():
        got = inputs[name].grad
        assert got is not None, f"{case.variant.key} gave no gradient for {name}"
        assert got.dtype == inputs[name].dtype, f"grad of {name} is {got.dtype}, input is {inputs[name].dtype}"
        tol = gradients.tolerance(case.spec, got.dtype, case.dtype, want)
        check_close(got, want, tol, what=f"d{name} of {_hint(case)}")


@pytest.mark.parametrize("case", VS_NAIVE, ids=_ids)
def test_agrees_with_naive(case: cases.Case) -> None:
    inputs = case.inputs()
    naive = _run(case, inputs, variant="naive")
    ref = _reference(case, inputs, naive)
    out = _run(case, inputs)
    for i, (n, r, o) in enumerate(zip(naive, ref, out, strict=True)):
        tol = case.spec.tolerance(o.dtype, case.dtype)
        # The comparison means something only if naive itself is right on these inputs.
        check_close(n, r, tol, what=f"naive on the inputs of {_what(case, i, len(out))}")
        # Two results that are each within tol of the reference are within 2*tol of each other.
        doubled = type(tol)(atol=2 * tol.atol, rtol=2 * tol.rtol, reason="two results each within the table's bound")
        check_close(o, n, doubled, what=f"{_what(case, i, len(out))} vs naive")


@pytest.mark.parametrize("case", DETERMINISTIC, ids=_ids)
def test_deterministic(case: cases.Case) -> None:
    inputs = case.inputs()
    first, second = _run(case, inputs), _run(case, inputs)
    for a, b in zip(first, second, strict=True):
        as_bits = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
        assert torch.equal(a.view(as_bits), b.view(as_bits)), (
            f"{case.variant.key} is declared deterministic but two runs on the same inputs differ bitwise"
        )
