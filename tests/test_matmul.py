"""matmul epilogues beyond the generated cases (which use bias + GELU): every bias/activation pair, and the ReLU
backward, whose reference must use the kernel's own mask."""

from __future__ import annotations

import pytest
import torch

import kernels
from kernels import backend, cases, memory, spec
from kernels.ops.matmul import reference
from kernels.tolerance import check_close

DEV = backend.device()
SPEC = spec.get("matmul")
# fp16: exact under the interpreter and on GPU alike (bf16 tl.dot is a declared interpreter gap).
DTYPE = torch.float16
SHAPE = (67, 45, 129)


def _inputs(with_bias: bool, salt: str):
    g = cases.Case(kernels.registry.get("matmul", "fused"), DTYPE, SHAPE, "epilogue").generator(salt)
    inputs = SPEC.make_inputs(SHAPE, DTYPE, DEV, g, "epilogue")
    if not with_bias:
        del inputs["bias"]
    return inputs


@pytest.mark.parametrize("activation", [None, "relu", "gelu"])
@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
def test_fused_epilogue_forward(activation, with_bias) -> None:
    inputs = _inputs(with_bias, f"fwd-{activation}-{with_bias}")
    inputs["activation"] = activation
    out = memory.poison_(torch.empty(SHAPE[0], SHAPE[1], dtype=DTYPE, device=DEV))
    with memory.poisoned():
        kernels.matmul(**inputs, variant="fused", out=out)
    check_close(out, reference(**spec.upcast(inputs)), SPEC.tolerance(DTYPE))


@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
def test_fused_relu_backward_uses_its_own_mask(with_bias) -> None:
    inputs = _inputs(with_bias, f"relu-bwd-{with_bias}")
    inputs["activation"] = "relu"
    names = [n for n in ("a", "b", "bias") if n in inputs]
    for n in names:
        inputs[n] = inputs[n].detach().requires_grad_()
    with memory.poisoned():
        out = kernels.matmul(**inputs, variant="fused")
    g = torch.randn(out.shape, dtype=DTYPE, device=DEV)
    out.backward(g)
    # Where the pre-activation is within rounding of 0, float64 may disagree with the kernel about the sign: the
    # gradient is undefined there. Take the mask from the kernel's own output, then differentiate exactly.
    dpre = g.double() * (out.detach() > 0).double()
    a, b = inputs["a"].detach().double(), inputs["b"].detach().double()
    tol = SPEC.tolerance(DTYPE)
    check_close(inputs["a"].grad, dpre @ b.t(), tol, what="da")
    check_close(inputs["b"].grad, a.t() @ dpre, tol, what="db")
    if with_bias:
        check_close(inputs["bias"].grad, dpre.sum(0), tol, what="dbias")


def test_fp8_per_row_with_a_single_row_and_column() -> None:
    variant = kernels.registry.get("matmul", "fp8")
    if reason := variant.unsupported_backend():
        pytest.skip(reason)
    for shape in [(1, 17, 5), (9, 1, 5), (1, 1, 1)]:
        g = torch.Generator().manual_seed(sum(shape))
        inputs = SPEC.make_inputs(shape, torch.float8_e4m3fn, DEV, g, "scaled_row")
        assert SPEC.mode_of(inputs) == "scaled_row"
        out = kernels.matmul(**inputs, variant="fp8")
        check_close(out, reference(**spec.upcast(inputs)), SPEC.tolerance(out.dtype, torch.float8_e4m3fn))
