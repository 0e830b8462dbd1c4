"""swiglu beyond the generated cases (flat tensors): tensors of several dimensions, and the inputs swiglu
refuses."""

from __future__ import annotations

import pytest
import torch

import kernels
from kernels import backend, memory, spec
from kernels.errors import KernelInputError
from kernels.ops.swiglu import reference
from kernels.tolerance import check_close

DEV = backend.device()
SPEC = spec.get("swiglu")


def _randn(*shape, dtype=torch.float32, seed=0):
    return spec.randn(shape, dtype, DEV, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("variant", ["naive", "fused"])
def test_swiglu_of_three_dimensional_tensors(variant) -> None:
    gate, up = _randn(3, 5, 7).requires_grad_(), _randn(3, 5, 7, seed=1).requires_grad_()
    out = memory.poison_(torch.empty(3, 5, 7, device=DEV))
    with memory.poisoned():
        y = kernels.swiglu(gate, up, variant=variant, out=out)
    gate64, up64 = (t.detach().double().requires_grad_() for t in (gate, up))
    y64 = reference(gate64, up64)
    tol = SPEC.tolerance(gate.dtype)
    assert y.shape == (3, 5, 7)
    check_close(y, y64, tol, what="y")
    dy = _randn(3, 5, 7, seed=2)
    y.backward(dy)
    y64.backward(dy.double())
    check_close(gate.grad, gate64.grad, tol, what="dgate")
    check_close(up.grad, up64.grad, tol, what="dup")


@pytest.mark.parametrize("variant", ["naive", "fused"])
def test_swiglu_gradient_of_one_input_only(variant) -> None:
    gate, up = _randn(37).requires_grad_(), _randn(37, seed=1)
    kernels.swiglu(gate, up, variant=variant).sum().backward()
    gate64 = gate.detach().double().requires_grad_()
    reference(gate64, up.double()).sum().backward()
    check_close(gate.grad, gate64.grad, SPEC.tolerance(gate.dtype), what="dgate")


def test_swiglu_refuses_the_strided_halves_of_a_fused_projection() -> None:
    gate, up = _randn(4, 16).chunk(2, dim=-1)
    with pytest.raises(KernelInputError, match=r"gate is not contiguous .* pass gate.contiguous\(\)"):
        kernels.swiglu(gate, up, variant="fused")


def test_swiglu_refuses_mismatched_shapes() -> None:
    with pytest.raises(KernelInputError, match=r"gate has shape \(4,\) but up has \(5,\)"):
        kernels.swiglu(_randn(4), _randn(5))


def test_swiglu_refuses_mixed_dtypes() -> None:
    with pytest.raises(KernelInputError, match=r"gate is torch.float32 but up is torch.float16"):
        kernels.swiglu(_randn(4), _randn(4).half())
