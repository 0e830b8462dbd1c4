"""gelu beyond the generated cases (flat tensors): a tensor of several dimensions, both forms through the public
function's default, and the inputs gelu refuses."""

from __future__ import annotations

import pytest
import torch

import kernels
from kernels import backend, memory, spec
from kernels.errors import KernelInputError
from kernels.ops.gelu import reference
from kernels.tolerance import check_close

DEV = backend.device()
SPEC = spec.get("gelu")


def _randn(*shape, dtype=torch.float32, seed=0):
    return spec.randn(shape, dtype, DEV, torch.Generator().manual_seed(seed), scale=2.0)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("variant", ["naive", "fused"])
def test_gelu_of_a_three_dimensional_tensor(variant, approximate) -> None:
    x = _randn(3, 5, 7).requires_grad_()
    out = memory.poison_(torch.empty(3, 5, 7, device=DEV))
    with memory.poisoned():
        y = kernels.gelu(x, approximate=approximate, variant=variant, out=out)
    x64 = x.detach().double().requires_grad_()
    y64 = reference(x64, approximate)
    assert y.shape == (3, 5, 7)
    check_close(y, y64, SPEC.tolerance(x.dtype), what="y")
    dy = _randn(3, 5, 7, seed=1)
    y.backward(dy)
    y64.backward(dy.double())
    check_close(x.grad, x64.grad, SPEC.tolerance(x.dtype), what="dx")


def test_gelu_defaults_to_the_erf_form() -> None:
    x = _randn(100)
    check_close(kernels.gelu(x, variant="fused"), torch.nn.functional.gelu(x.double()), SPEC.tolerance(x.dtype))


def test_gelu_refuses_an_unknown_approximation() -> None:
    with pytest.raises(KernelInputError, match=r"approximate must be one of \('none', 'tanh'\), got 'erf'"):
        kernels.gelu(_randn(4), approximate="erf")


def test_gelu_refuses_non_contiguous_x() -> None:
    with pytest.raises(KernelInputError, match=r"x is not contiguous .* pass x.contiguous\(\)"):
        kernels.gelu(_randn(8, 8).t(), variant="fused")


def test_gelu_refuses_integers() -> None:
    with pytest.raises(KernelInputError, match="x must be a floating-point tensor"):
        kernels.gelu(torch.ones(4, dtype=torch.int32, device=DEV))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_fused_gradient_stays_finite_for_huge_inputs(approximate) -> None:
    # x^2 overflows float32 beyond |x| ~ 1.8e19; eager PyTorch's float32 tanh-form backward (and the naive variant,
    # which runs the same formula) then gives 0 * inf = NaN. The fused variant keeps the limits 0 and 1.
    x = torch.tensor([-1e30, -1e20, -30.0, -10.5, 10.5, 30.0, 1e20, 1e30], device=DEV, requires_grad=True)
    kernels.gelu(x, approximate=approximate, variant="fused").backward(torch.ones_like(x))
    x64 = x.detach().double().requires_grad_()
    reference(x64, approximate).backward(torch.ones_like(x64))
    check_close(x.grad, x64.grad, SPEC.tolerance(x.dtype), what="dx")
