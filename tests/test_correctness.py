"""Every registered variant, against its op's float64 reference. Parametrized from the registry."""

from __future__ import annotations

import pytest
import torch

from kernels import backend, cases, dispatch, memory, registry, spec
from kernels.tolerance import check_close

registry.discover()
WHERE = backend.name()
ALL = cases.cases(WHERE)
BACKWARD = [c for c in ALL if c.spec.has_backward and c.variant.backward is not None]
# Only cases the op's naive variant can also run are comparable with it.
VS_NAIVE = [
    c
    for c in ALL
    if c.variant.name != "naive"
    and (naive := registry.get(c.op, "naive")).unsupported_dtype(c.dtype) is None
    and c.mode in naive.modes
    and naive.unsupported_shape(c.shape) is None
]
DETERMINISTIC = [c for c in ALL if c.variant.deterministic]


def _ids(case: cases.Case) -> str:
    return case.id


def _run(case: cases.Case, inputs: spec.Inputs, variant: str | None = None) -> torch.Tensor:
    """Run with every buffer the kernel allocates poisoned with NaN, into a NaN-filled output."""
    out = dispatch.allocate_poisoned(case.op, inputs)
    with memory.poisoned():
        result = dispatch.run(case.op, inputs, variant=variant or case.variant.name, out=out)
    assert result.data_ptr() == out.data_ptr(), f"{case.variant.key} did not write into the out tensor it was given"
    return result


def _reference(case: cases.Case, inputs: spec.Inputs) -> torch.Tensor:
    return case.spec.reference(**spec.upcast(inputs))


def _hint(case: cases.Case) -> str:
    return f"{case.id} (reproduce with {cases.SEED_ENV}={cases.session_seed()})"


@pytest.mark.parametrize("case", ALL, ids=_ids)
def test_matches_reference(case: cases.Case) -> None:
    inputs = case.inputs()
    out = _run(case, inputs)
    check_close(out, _reference(case, inputs), case.spec.tolerance(out.dtype, case.dtype), what=_hint(case))


@pytest.mark.parametrize("case", BACKWARD, ids=_ids)
def test_backward(case: cases.Case) -> None:
    inputs = case.inputs()
    grads_wanted = [n for n in case.spec.grad_inputs if isinstance(inputs.get(n), torch.Tensor)]
    for name in grads_wanted:
        inputs[name] = inputs[name].detach().requires_grad_()
    with memory.poisoned():
        out = dispatch.run(case.op, inputs, variant=case.variant.name)
    scale = case.spec.grad_scale(case.shape)
    grad_out = spec.randn(tuple(out.shape), out.dtype, out.device, case.generator("grad"), scale=scale)
    out.backward(grad_out)

    ref_inputs = {
        k: (v.detach().double().requires_grad_() if k in grads_wanted else v) for k, v in spec.upcast(inputs).items()
    }
    case.spec.reference(**ref_inputs).backward(grad_out.double())
    for name in grads_wanted:
        got = inputs[name].grad
        assert got is not None, f"{case.variant.key} gave no gradient for {name}"
        assert got.dtype == inputs[name].dtype, f"grad of {name} is {got.dtype}, input is {inputs[name].dtype}"
        tol = case.spec.tolerance(got.dtype, case.dtype)
        check_close(got, ref_inputs[name].grad, tol, what=f"d{name} of {_hint(case)}")


@pytest.mark.parametrize("case", VS_NAIVE, ids=_ids)
def test_agrees_with_naive(case: cases.Case) -> None:
    inputs = case.inputs()
    tol = case.spec.tolerance(case.spec.make_output(inputs).dtype, case.dtype)
    naive = _run(case, inputs, variant="naive")
    # The comparison means something only if naive itself is right on these inputs.
    check_close(naive, _reference(case, inputs), tol, what=f"naive on the inputs of {_hint(case)}")
    out = _run(case, inputs)
    # Two results that are each within tol of the reference are within 2*tol of each other.
    doubled = type(tol)(atol=2 * tol.atol, rtol=2 * tol.rtol, reason="two results each within the table's bound")
    check_close(out, naive, doubled, what=f"{_hint(case)} vs naive")


@pytest.mark.parametrize("case", DETERMINISTIC, ids=_ids)
def test_deterministic(case: cases.Case) -> None:
    inputs = case.inputs()
    first, second = _run(case, inputs), _run(case, inputs)
    as_bits = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[first.element_size()]
    assert torch.equal(first.view(as_bits), second.view(as_bits)), (
        f"{case.variant.key} is declared deterministic but two runs on the same inputs differ bitwise"
    )
