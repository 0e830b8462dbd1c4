"""layernorm beyond the generated cases: a single column, mixed-precision parameters, strided and 3-D inputs, the
welford spans and the column-split backward on small shapes, and bad input."""

from __future__ import annotations

import pytest
import torch

import kernels
from kernels import backend, memory, registry, spec
from kernels.errors import KernelInputError
from kernels.tolerance import check_close
from variants import _row_partials
from variants.layernorm import _backward, welford

DEV = backend.device()
SPEC = spec.get("layernorm")
registry.discover()
VARIANTS = [v.name for v in registry.variants_of("layernorm")]  # every variant, a new one included


def _inputs(shape, dtype=torch.float16, seed=0, param_dtype=None):
    inputs = SPEC.make_inputs(shape, dtype, DEV, torch.Generator().manual_seed(seed), "default")
    if param_dtype is not None:
        inputs["weight"] = inputs["weight"].to(param_dtype)
        inputs["bias"] = inputs["bias"].to(param_dtype)
    return inputs


def _check_forward_and_backward(inputs, variant, grad_scale=1.0):
    """The variant's output and its gradients of x, weight and bias, against float64 autograd."""
    names = ("x", "weight", "bias")
    leaves = {n: inputs[n].detach().requires_grad_() for n in names}
    with memory.poisoned():
        out = kernels.layernorm(leaves["x"], leaves["weight"], leaves["bias"], eps=inputs["eps"], variant=variant)
    dy = grad_scale * torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(DEV, out.dtype)
    out.backward(dy)
    ref_leaves = {n: inputs[n].detach().double().requires_grad_() for n in names}
    ref = SPEC.reference(**ref_leaves, eps=inputs["eps"])
    ref.backward(dy.double())
    check_close(out, ref, SPEC.tolerance(out.dtype), what=f"{variant} out")
    for n in names:
        assert leaves[n].grad.dtype == inputs[n].dtype
        check_close(leaves[n].grad, ref_leaves[n].grad, SPEC.tolerance(inputs[n].dtype), what=f"{variant} d{n}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_single_column_gives_the_bias(variant) -> None:
    # Variance 0: every x is its row's mean, so out is the bias exactly, dx and dweight are 0 and dbias sums dy.
    inputs = _inputs((5, 1), torch.float32)
    out = kernels.layernorm(inputs["x"], inputs["weight"], inputs["bias"], variant=variant)
    assert torch.equal(out, inputs["bias"].expand(5, 1))
    _check_forward_and_backward(inputs, variant)


@pytest.mark.parametrize("variant", ["fused", "welford"])
def test_float32_parameters_with_half_activations(variant) -> None:
    # Mixed precision: bf16 activations, fp32 weight and bias; their gradients come back in fp32.
    inputs = _inputs((9, 300), torch.bfloat16, param_dtype=torch.float32)
    _check_forward_and_backward(inputs, variant, grad_scale=9**-0.5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_row_strided_and_3d_inputs(variant) -> None:
    wide = _inputs((6, 200), seed=2)
    inputs = dict(wide, x=wide["x"][:, 3:150], weight=wide["weight"][:147], bias=wide["bias"][:147])
    assert not inputs["x"].is_contiguous()
    _check_forward_and_backward(inputs, variant, grad_scale=6**-0.5)
    inputs = _inputs((12, 65), seed=3)
    inputs["x"] = inputs["x"].view(3, 4, 65)
    _check_forward_and_backward(inputs, variant, grad_scale=12**-0.5)


@pytest.mark.parametrize("target_programs", [1, 4, 1000], ids=["whole-rows", "two-spans", "one-block-spans"])
def test_welford_spans_of_several_blocks(monkeypatch, target_programs) -> None:
    # Small blocks so that the streaming update folds many blocks per span, with spans of a row combined after.
    monkeypatch.setattr(welford, "MAX_BLOCK_COLS", 64)
    monkeypatch.setattr(welford, "TARGET_PROGRAMS", target_programs)
    span_cols, spans = welford._spans(2, 999, 64)
    assert (spans == 1) == (target_programs == 1) and (span_cols == 64) == (target_programs == 1000)
    inputs = _inputs((2, 999), torch.float32, seed=4)
    _check_forward_and_backward(inputs, "welford")


def test_column_split_backward_with_several_groups(monkeypatch) -> None:
    monkeypatch.setattr(_backward, "MAX_ON_CHIP_COLS", 64)
    monkeypatch.setattr(_backward, "SPLIT_BLOCK_COLS", 32)
    monkeypatch.setattr(_row_partials, "MIN_ROWS_PER_GROUP", 2)
    inputs = _inputs((9, 203), torch.float32, seed=5)
    _check_forward_and_backward(inputs, "fused", grad_scale=9**-0.5)


def test_bad_input() -> None:
    x = torch.randn(4, 8, device=DEV)
    w, b = torch.ones(8, device=DEV), torch.zeros(8, device=DEV)
    with pytest.raises(KernelInputError, match=r"weight must have shape \[cols\] = \[8\]"):
        kernels.layernorm(x, torch.ones(7, device=DEV), b)
    with pytest.raises(KernelInputError, match=r"weight is torch\.float32 but bias is torch\.float16"):
        kernels.layernorm(x.half(), w, b.half())
    with pytest.raises(KernelInputError, match=r"weight is torch\.float16; it must be x's dtype"):
        kernels.layernorm(x, w.half(), b.half())
    with pytest.raises(KernelInputError, match="eps must be a finite number >= 0"):
        kernels.layernorm(x, w, b, eps=-1.0)
    with pytest.raises(KernelInputError, match="last dimension of x must be contiguous"):
        kernels.layernorm(torch.randn(8, 4, device=DEV).t(), w, b)
    with pytest.raises(KernelInputError, match="weight must be contiguous"):
        kernels.layernorm(x, torch.ones(16, device=DEV)[::2], b)
