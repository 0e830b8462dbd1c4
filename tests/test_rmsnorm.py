"""rmsnorm beyond the generated cases: which variant a residual call gets, gradients when only one output is used,
a single column, strided inputs, the autotuned spans and the column-split backward on small shapes, bad input."""

from __future__ import annotations

import pytest
import torch

import kernels
from kernels import backend, memory, spec
from kernels.errors import KernelInputError
from kernels.ops import rmsnorm as rmsnorm_op
from kernels.tolerance import check_close
from variants import _row_partials
from variants.rmsnorm import _backward, autotuned

DEV = backend.device()
SPEC = spec.get("rmsnorm")


def _inputs(shape, dtype=torch.float16, mode="default", seed=0):
    return SPEC.make_inputs(shape, dtype, DEV, torch.Generator().manual_seed(seed), mode)


def _check(inputs, variant=None, grad_scale=1.0, use=(0, 1)):
    """Forward and backward of ``variant`` against float64 autograd, differentiating only the outputs in ``use``."""
    names = [n for n in ("x", "weight", "residual") if n in inputs]
    leaves = {n: inputs[n].detach().requires_grad_() for n in names}
    with memory.poisoned():
        out = kernels.rmsnorm(**(inputs | leaves), variant=variant)
    ref_leaves = {n: inputs[n].detach().double().requires_grad_() for n in names}
    ref = SPEC.reference(**(inputs | ref_leaves))
    outs, refs = (out, ref) if isinstance(out, tuple) else ((out,), (ref,))
    g = torch.Generator().manual_seed(1)
    loss, ref_loss = 0, 0
    for i, (o, r) in enumerate(zip(outs, refs, strict=True)):
        check_close(o, r, SPEC.tolerance(o.dtype), what=f"output {i}")
        if i in use:
            dy = grad_scale * torch.randn(o.shape, generator=g).to(DEV, o.dtype)
            loss = loss + (o * dy).sum()
            ref_loss = ref_loss + (r * dy.double()).sum()
    loss.backward()
    ref_loss.backward()
    for n in names:
        assert leaves[n].grad.dtype == inputs[n].dtype
        # Where float64 autograd never reaches an input (weight, when only the sum is used), its gradient is 0.
        want = ref_leaves[n].grad if ref_leaves[n].grad is not None else torch.zeros_like(ref_leaves[n])
        check_close(leaves[n].grad, want, SPEC.tolerance(inputs[n].dtype), what=f"d{n}")
    return leaves


def test_residual_call_without_a_variant_gets_one_that_takes_residuals() -> None:
    assert rmsnorm_op._residual_variant(torch.empty(4, 1000, device="meta")) == "fused_residual"
    assert rmsnorm_op._residual_variant(torch.empty(2, 40000, device="meta")) == "naive"
    inputs = _inputs((7, 129), mode="residual")
    _, s = kernels.rmsnorm(**inputs)
    check_close(s, inputs["x"].double() + inputs["residual"].double(), SPEC.tolerance(s.dtype))


@pytest.mark.parametrize("use", [(0,), (1,), (0, 1)], ids=["out-only", "sum-only", "both"])
@pytest.mark.parametrize("variant", ["naive", "fused_residual"])
def test_residual_gradients_with_either_output_unused(variant, use) -> None:
    leaves = _check(_inputs((9, 300), mode="residual", seed=2), variant, grad_scale=9**-0.5, use=use)
    # dx and dresidual are equal, and separate tensors: one .grad must not alias the other.
    assert torch.equal(leaves["x"].grad, leaves["residual"].grad)
    assert leaves["x"].grad.data_ptr() != leaves["residual"].grad.data_ptr()


@pytest.mark.parametrize("variant", ["naive", "fused", "autotuned"])
def test_single_column(variant) -> None:
    # Each element is its own rms: out = x / sqrt(x^2 + eps) * weight. (Its dx is all cancellation; not checked.)
    inputs = _inputs((5, 1), torch.float32, seed=3)
    out = kernels.rmsnorm(**inputs, variant=variant)
    check_close(out, SPEC.reference(**spec.upcast(inputs)), SPEC.tolerance(out.dtype))


@pytest.mark.parametrize("variant", ["naive", "fused", "autotuned", "fused_residual"])
def test_row_strided_and_3d_inputs(variant) -> None:
    mode = "residual" if variant == "fused_residual" else "default"
    wide = _inputs((6, 200), mode=mode, seed=4)
    inputs = dict(wide, x=wide["x"][:, 3:150], weight=wide["weight"][:147])
    if mode == "residual":
        inputs["residual"] = wide["residual"][:, 50:197]
    assert not inputs["x"].is_contiguous()
    _check(inputs, variant, grad_scale=6**-0.5)
    inputs = _inputs((12, 65), mode=mode, seed=5)
    inputs["x"] = inputs["x"].view(3, 4, 65)
    if mode == "residual":
        inputs["residual"] = inputs["residual"].view(3, 4, 65)
    _check(inputs, variant, grad_scale=12**-0.5)


@pytest.mark.parametrize("target_programs", [1, 1000], ids=["whole-rows", "one-granule-spans"])
def test_autotuned_spans(monkeypatch, target_programs) -> None:
    monkeypatch.setattr(autotuned, "TARGET_PROGRAMS", target_programs)
    span_cols, spans = autotuned._spans(2, 20000)
    assert (spans, span_cols) == ((1, 20480) if target_programs == 1 else (5, 4096))
    _check(_inputs((2, 20000), torch.float32, seed=6), "autotuned", grad_scale=2**-0.5)


@pytest.mark.parametrize("mode", ["default", "residual"])
def test_column_split_backward_with_several_groups(monkeypatch, mode) -> None:
    monkeypatch.setattr(_backward, "MAX_ON_CHIP_COLS", 64)
    monkeypatch.setattr(_backward, "SPLIT_BLOCK_COLS", 32)
    monkeypatch.setattr(_row_partials, "MIN_ROWS_PER_GROUP", 2)
    _check(_inputs((9, 203), torch.float32, mode=mode, seed=7), "naive", grad_scale=9**-0.5)


def test_bad_input() -> None:
    x = torch.randn(4, 8, device=DEV)
    w = torch.ones(8, device=DEV)
    with pytest.raises(KernelInputError, match=r"weight must have shape \[cols\] = \[8\]"):
        kernels.rmsnorm(x, torch.ones(4, device=DEV))
    with pytest.raises(KernelInputError, match=r"residual must have the shape of x, \[4, 8\], got \[4, 7\]"):
        kernels.rmsnorm(x, w, residual=torch.randn(4, 7, device=DEV))
    with pytest.raises(KernelInputError, match=r"x is torch\.float32 but residual is torch\.float16"):
        kernels.rmsnorm(x, w, residual=x.half())
    with pytest.raises(KernelInputError, match="eps must be a finite number >= 0"):
        kernels.rmsnorm(x, w, eps=float("nan"))
    with pytest.raises(kernels.UnsupportedError, match="does not take 'residual' inputs; variants that do: "):
        kernels.rmsnorm(x, w, residual=x, variant="autotuned")
