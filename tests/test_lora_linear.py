"""lora_linear beyond the generated cases (contiguous operands, scale 2): the default and a negative scale,
strided and transposed operands, gradients for a subset of the inputs, rank 0, and the inputs it refuses."""

from __future__ import annotations

import pytest
import torch

import kernels
from kernels import backend, dispatch, memory, registry, spec
from kernels.errors import KernelInputError, UnsupportedError
from kernels.ops.lora_linear import reference
from kernels.tolerance import check_close

DEV = backend.device()
SPEC = spec.get("lora_linear")
registry.discover()
VARIANTS = [v.name for v in registry.variants_of("lora_linear")]  # every variant, a new one included
# fp16: exact under the interpreter and on GPU alike (bf16 tl.dot is a declared interpreter gap).
DTYPE = torch.float16


def _inputs(M, N, K, rank, *, seed=0, dtype=DTYPE):
    return SPEC.make_inputs((M, N, K, rank), dtype, DEV, torch.Generator().manual_seed(seed), "default")


def _check(inputs, variant, grads=("x", "a", "b"), *, seed=1):
    """Forward into a NaN-poisoned output, then backward for ``grads``, both against float64 autograd."""
    inputs = dict(inputs)
    for name in grads:
        inputs[name] = inputs[name].detach().requires_grad_()
    with memory.poisoned():
        y = kernels.lora_linear(**inputs, variant=variant, out=dispatch.allocate_poisoned("lora_linear", inputs))
    ref_in = {
        n: (v.detach().double().requires_grad_(n in grads) if torch.is_tensor(v) else v) for n, v in inputs.items()
    }
    ref = reference(**ref_in)
    tol = SPEC.tolerance(y.dtype)
    check_close(y, ref, tol, what=f"{variant} y")
    shape = SPEC.problem_shape(inputs)
    dy = spec.randn(tuple(y.shape), y.dtype, DEV, torch.Generator().manual_seed(seed), SPEC.grad_scale(shape))
    with memory.poisoned():
        y.backward(dy)
    ref.backward(dy.double())
    for name in ("x", "w", "a", "b"):
        if name in grads:
            check_close(inputs[name].grad, ref_in[name].grad, tol, what=f"{variant} d{name}")
        else:
            assert inputs[name].grad is None


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("scale", [1.0, -0.5])
def test_lora_linear_default_and_negative_scale(variant, scale) -> None:
    inputs = _inputs(37, 29, 70, 6)
    if scale == 1.0:
        del inputs["scale"]  # the keyword's default
    else:
        inputs["scale"] = scale
    _check(inputs, variant)


@pytest.mark.parametrize("variant", VARIANTS)
def test_lora_linear_strided_and_transposed_operands(variant) -> None:
    M, N, K, rank = 21, 19, 40, 5
    base = _inputs(M, N, K, rank, seed=3)
    inputs = {
        "x": base["x"].t().contiguous().t(),  # [M, K], column-major
        "w": torch.cat([base["w"], base["w"]], dim=1)[:, ::2],  # [N, K] with a column stride of 2
        "a": base["a"].t().contiguous().t(),
        "b": base["b"].t().contiguous().t(),
        "scale": 0.75,
    }
    assert not any(inputs[n].is_contiguous() for n in ("x", "w", "a", "b"))
    _check(inputs, variant)


@pytest.mark.parametrize("variant", VARIANTS)
def test_lora_linear_gradient_for_x_only(variant) -> None:
    # Inference through a frozen adapter into a trainable earlier layer: only x needs a gradient.
    _check(_inputs(17, 23, 33, 4, seed=5), variant, grads=("x",))


@pytest.mark.parametrize("variant", VARIANTS)
def test_lora_linear_float32(variant) -> None:
    _check(_inputs(9, 35, 18, 2, seed=7, dtype=torch.float32), variant)


def test_lora_linear_rank_zero_is_the_base_layer() -> None:
    inputs = _inputs(5, 7, 9, 0)
    y = kernels.lora_linear(**inputs)
    check_close(y, spec.upcast(inputs)["x"] @ spec.upcast(inputs)["w"].T, SPEC.tolerance(DTYPE))


def test_lora_linear_frozen_weight_gets_no_gradient() -> None:
    inputs = _inputs(4, 4, 4, 2)
    inputs["w"].requires_grad_()
    with pytest.raises(KernelInputError, match="w requires grad, but lora_linear has no gradient with respect to w"):
        kernels.lora_linear(**inputs)


# -- bad input -----------------------------------------------------------------------------------------------------
def _bad(**changes):
    inputs = _inputs(6, 5, 8, 3)
    inputs.update(changes)
    return inputs


def _randn(*shape, dtype=DTYPE):
    return torch.randn(shape, dtype=dtype, device=DEV)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"w": _randn(5, 9)}, r"their K \(8, 9, 8\) must match"),
        ({"a": _randn(3, 7)}, r"a is \[rank, K\] = \[3, 7\]: their K \(8, 8, 7\) must match"),
        ({"x": _randn(6, 10)}, r"x is \[M, K\] = \[6, 10\].*their K \(10, 8, 8\) must match"),
        ({"b": _randn(5, 4)}, r"a is \[rank, K\] = \[3, 8\] and b is \[N, rank\] = \[5, 4\]: ranks 3 and 4 differ"),
        ({"b": _randn(4, 3)}, r"w is \[N, K\] = \[5, 8\] and b is \[N, rank\] = \[4, 3\]: output features 5 and 4"),
    ],
    ids=["K-of-w", "K-of-a", "K-of-x", "rank", "N"],
)
def test_lora_linear_mismatched_dimensions(changes, message) -> None:
    with pytest.raises(KernelInputError, match=message):
        kernels.lora_linear(**_bad(**changes))


@pytest.mark.parametrize("name", ["x", "w", "a", "b"])
def test_lora_linear_mixed_dtypes(name) -> None:
    inputs = _bad()
    inputs[name] = inputs[name].float()
    with pytest.raises(KernelInputError, match=rf"is torch\.float(16|32) but {name if name != 'x' else 'w'} is"):
        kernels.lora_linear(**inputs)


@pytest.mark.parametrize(
    "changes",
    [{"x": _randn(2, 3, 8)}, {"w": _randn(5 * 8)}, {"a": _randn(1, 3, 8)}, {"b": _randn(5)}],
    ids=["x-3d", "w-1d", "a-3d", "b-1d"],
)
def test_lora_linear_needs_2d(changes) -> None:
    with pytest.raises(KernelInputError, match="x, w, a and b must all be 2-D"):
        kernels.lora_linear(**_bad(**changes))


def test_lora_linear_integer_operands() -> None:
    ints = {n: t.to(torch.int32) for n, t in _bad().items() if torch.is_tensor(t)}
    with pytest.raises(KernelInputError, match="x must be a floating-point tensor"):
        kernels.lora_linear(**ints)


@pytest.mark.parametrize("scale", [True, float("inf"), float("nan"), "2", torch.tensor(2.0, device=DEV)])
def test_lora_linear_scale_is_a_finite_number(scale) -> None:
    with pytest.raises(KernelInputError, match="scale must be a finite real number"):
        kernels.lora_linear(**_bad(scale=scale))


def test_lora_linear_rank_past_the_fused_tile() -> None:
    inputs = _inputs(3, 4, 5, 129)
    with pytest.raises(UnsupportedError, match=r"lora_linear.fused v\S+ supports 1 <= rank <= 128, got rank=129"):
        kernels.lora_linear(**inputs, variant="fused")
