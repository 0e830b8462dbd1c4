"""cross_entropy beyond the generated cases: the mean's gradient at a scale where the table can see it, targets
that are ignored, out of range or strided, every reduction with smoothing, and what the op refuses."""

from __future__ import annotations

import pytest
import torch

import kernels
from kernels import backend, cases, registry, spec
from kernels.dtypes import FLOATS, short
from kernels.errors import KernelInputError
from kernels.ops.cross_entropy import reference
from kernels.tolerance import check_close

DEV = backend.device()
SPEC = spec.get("cross_entropy")
registry.discover()
VARIANTS = [v.name for v in registry.variants_of("cross_entropy")]  # every variant, a new one included
LOSS_TOL = SPEC.tolerance(torch.float32)


def _inputs(shape, dtype=torch.float32, mode="mean", salt=""):
    case = cases.Case(registry.get("cross_entropy", "naive"), dtype, shape, mode)
    return SPEC.make_inputs(shape, dtype, DEV, case.generator(salt), mode)


def _loss_and_grad(inputs, variant, grad_out=None):
    """The loss and d(loss)/d(logits) from ``variant``, and both from the float64 reference."""
    logits = inputs["logits"].detach().requires_grad_()
    out = kernels.cross_entropy(logits, **{k: v for k, v in inputs.items() if k != "logits"}, variant=variant)
    grad_out = torch.ones_like(out) if grad_out is None else grad_out
    out.backward(grad_out)
    ref_logits = inputs["logits"].detach().double().requires_grad_()
    ref = reference(ref_logits, **{k: v for k, v in inputs.items() if k != "logits"})
    ref.backward(grad_out.double())
    return out, logits.grad, ref, ref_logits.grad


@pytest.mark.parametrize("dtype", FLOATS, ids=short)
@pytest.mark.parametrize("mode", ["mean", "smoothing"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_mean_gradient_at_unit_scale(variant, mode, dtype) -> None:
    # The mean divides every gradient by the count, leaving them far below the table's atol at realistic T.
    # An output gradient equal to the count brings them back to O(1), where a wrong count or a missing
    # smoothing term shows.
    inputs = _inputs((37, 1000), dtype, mode, salt=f"unit-{variant}")
    count = float((inputs["target"] != inputs["ignore_index"]).sum())
    out, grad, ref, ref_grad = _loss_and_grad(inputs, variant, torch.tensor(count, device=DEV))
    check_close(out, ref, LOSS_TOL, what="loss")
    check_close(grad, ref_grad, SPEC.tolerance(dtype), what="dlogits")


@pytest.mark.parametrize("label_smoothing", [0.1, 1.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_smoothing_with_every_reduction(variant, reduction, label_smoothing) -> None:
    inputs = _inputs((11, 300), salt=f"smooth-{variant}-{reduction}-{label_smoothing}")
    inputs.update(reduction=reduction, label_smoothing=label_smoothing)
    out, grad, ref, ref_grad = _loss_and_grad(inputs, variant)
    check_close(out, ref, LOSS_TOL, what="loss")
    check_close(grad, ref_grad, SPEC.tolerance(torch.float32), what="dlogits")


@pytest.mark.parametrize("ignore_index", [0, -1, 7])
@pytest.mark.parametrize("variant", VARIANTS)
def test_other_ignore_indices(variant, ignore_index) -> None:
    # 0 and 7 are real classes: rows whose target equals them are ignored, even though the index is in range.
    inputs = _inputs((16, 50), salt=f"ignore-{variant}-{ignore_index}")
    target = inputs["target"].clone()
    target[target == inputs["ignore_index"]] = 3
    target[::4] = ignore_index
    inputs.update(target=target, ignore_index=ignore_index, reduction="none")
    out, grad, ref, ref_grad = _loss_and_grad(inputs, variant)
    check_close(out, ref, LOSS_TOL, what="loss")
    check_close(grad, ref_grad, SPEC.tolerance(torch.float32), what="dlogits")
    assert (out[::4] == 0).all() and (grad[::4] == 0).all()


# The interpreter computes the mean's 0 / 0 in numpy, which warns.
@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_row_ignored(variant) -> None:
    inputs = _inputs((5, 20), salt=f"all-ignored-{variant}")
    inputs["target"] = torch.full_like(inputs["target"], inputs["ignore_index"])
    for reduction in ("mean", "sum", "none"):
        inputs["reduction"] = reduction
        out, grad, ref, ref_grad = _loss_and_grad(inputs, variant)
        # torch: the mean of nothing is NaN, its gradient 0.
        assert torch.equal(torch.isnan(out), torch.isnan(ref.float())), f"{reduction}: {out} vs {ref}"
        assert (out[~torch.isnan(out)] == 0).all()
        assert (grad == 0).all() and (ref_grad == 0).all(), reduction


@pytest.mark.parametrize("variant", VARIANTS)
def test_targets_out_of_range_are_refused_or_give_nan_rows(variant) -> None:
    rows, vocab = 6, 40
    inputs = _inputs((rows, vocab), salt=f"bad-target-{variant}")
    target = torch.randint(0, vocab, (rows,), generator=torch.Generator().manual_seed(0)).to(DEV)
    bad = torch.tensor([False, True, False, True, False, False], device=DEV)
    target[1], target[3] = vocab, -5
    inputs.update(target=target, reduction="none")
    logits = inputs["logits"].detach().requires_grad_()
    with pytest.raises(
        KernelInputError, match=rf"target\[1\] = {vocab} is not a class index in \[0, {vocab}\).*2 of 6"
    ):
        kernels.cross_entropy(logits, target, reduction="none", variant=variant)
    # Unchecked (no device synchronization), the kernels still read nothing outside a row and the rows show NaN.
    out = kernels.cross_entropy(logits, target, reduction="none", check_targets=False, variant=variant)
    out.backward(torch.ones_like(out))
    assert torch.equal(torch.isnan(out), bad), "a bad target's row, and only it, must be NaN"
    assert torch.isnan(logits.grad[bad]).all() and not torch.isnan(logits.grad[~bad]).any()
    good = reference(inputs["logits"][~bad].double(), target[~bad], reduction="none")
    check_close(out[~bad], good, LOSS_TOL, what="the rows with good targets")
    for reduction in ("mean", "sum"):
        loss = kernels.cross_entropy(
            inputs["logits"], target, reduction=reduction, check_targets=False, variant=variant
        )
        assert torch.isnan(loss)


@pytest.mark.parametrize("variant", VARIANTS)
def test_strided_logits_and_target(variant) -> None:
    inputs = _inputs((9, 300), salt=f"strided-{variant}")
    wide = torch.randn(9, 333, device=DEV) * 2
    wide[:, :300] = inputs["logits"]
    logits = wide[:, :300]
    target = torch.stack([inputs["target"], torch.zeros_like(inputs["target"])], dim=1)[:, 0]
    assert logits.stride() == (333, 1) and target.stride() == (2,)
    for reduction in ("mean", "none"):
        out = kernels.cross_entropy(logits, target, reduction=reduction, variant=variant)
        check_close(out, reference(logits.double(), target, reduction=reduction), LOSS_TOL, what=reduction)


@pytest.mark.parametrize("variant", VARIANTS)
def test_result_is_float32_and_gradient_has_the_logits_dtype(variant) -> None:
    inputs = _inputs((4, 33), torch.bfloat16, salt=f"dtypes-{variant}")
    logits = inputs["logits"].detach().requires_grad_()
    for reduction, shape in (("mean", ()), ("sum", ()), ("none", (4,))):
        out = kernels.cross_entropy(logits, inputs["target"], reduction=reduction, variant=variant)
        assert out.dtype == torch.float32 and out.shape == shape, reduction
    out.sum().backward()
    assert logits.grad.dtype == torch.bfloat16


def test_loss_does_not_depend_on_whether_a_gradient_is_wanted() -> None:
    # fused skips its gradient loop without requires_grad; the loss must come out the same bit for bit.
    inputs = _inputs((13, 1000), salt="grad-or-not")
    options = {k: v for k, v in inputs.items() if k not in ("logits", "target")}
    plain = kernels.cross_entropy(inputs["logits"], inputs["target"], **options, variant="fused")
    logits = inputs["logits"].detach().requires_grad_()
    with_grad = kernels.cross_entropy(logits, inputs["target"], **options, variant="fused")
    assert torch.equal(plain.view(torch.int32), with_grad.detach().view(torch.int32))


@pytest.mark.parametrize("grad_scale", [2.0, 1.0])
@pytest.mark.parametrize("variant", VARIANTS)
def test_backward_twice(variant, grad_scale) -> None:
    # Backward must leave what forward stored intact, for a graph that is run again; at 1.0 fused hands back the
    # stored gradient itself, which must survive being accumulated into a leaf's .grad.
    inputs = _inputs((7, 129), salt=f"twice-{variant}")
    logits = inputs["logits"].detach().requires_grad_()
    out = kernels.cross_entropy(logits, inputs["target"], variant=variant)
    first = torch.autograd.grad(out, logits, torch.tensor(grad_scale, device=DEV), retain_graph=True)[0].clone()
    out.backward(torch.tensor(grad_scale, device=DEV), retain_graph=True)
    out.backward(torch.tensor(grad_scale, device=DEV), retain_graph=True)
    second = torch.autograd.grad(out, logits, torch.tensor(grad_scale, device=DEV))[0]
    assert torch.equal(first, second)
    torch.testing.assert_close(logits.grad, 2 * first, rtol=0, atol=0)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_no_rows(reduction) -> None:
    logits = torch.randn(0, 10, device=DEV, requires_grad=True)
    out = kernels.cross_entropy(logits, torch.zeros(0, dtype=torch.int64, device=DEV), reduction=reduction)
    want = reference(logits.detach().double(), torch.zeros(0, dtype=torch.int64, device=DEV), reduction=reduction)
    assert out.dtype == torch.float32 and out.shape == want.shape
    assert torch.equal(torch.isnan(out), torch.isnan(want.float()))
    out.sum().backward()
    assert logits.grad is not None and logits.grad.shape == (0, 10)


# -- bad input ------------------------------------------------------------------------------------------------------
def _good():
    return torch.randn(4, 10, device=DEV), torch.zeros(4, dtype=torch.int64, device=DEV)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"target": torch.zeros(4, dtype=torch.int32)}, "target must hold int64 class indices"),
        ({"target": torch.zeros(5, dtype=torch.int64)}, r"target must have shape \[T\] = \[4\]"),
        ({"target": torch.zeros(4, 1, dtype=torch.int64)}, r"target must have shape \[T\] = \[4\]"),
        ({"logits": torch.randn(40)}, r"logits must be 2-D \[T, V\]"),
        ({"logits": torch.randn(10, 4).t()}, "the vocabulary dimension of logits must be contiguous"),
        ({"logits": torch.ones(4, 10, dtype=torch.int64)}, "logits must be a floating-point tensor"),
        ({"logits": torch.randn(4, 0)}, r"logits has no classes"),
        ({"reduction": "avg"}, "reduction must be one of"),
        ({"label_smoothing": 1.5}, r"label_smoothing must be in \[0, 1\]"),
        ({"label_smoothing": -0.1}, r"label_smoothing must be in \[0, 1\]"),
        ({"label_smoothing": float("nan")}, r"label_smoothing must be in \[0, 1\]"),
        ({"label_smoothing": True}, "label_smoothing must be a float"),
        ({"ignore_index": 1.5}, "ignore_index must be an int"),
        ({"ignore_index": False}, "ignore_index must be an int"),
        ({"ignore_index": 2**63}, "ignore_index must fit in int64"),
    ],
    ids=lambda v: v if isinstance(v, str) else "-".join(v),
)
def test_bad_input_is_refused(change, message) -> None:
    logits, target = _good()
    args = {"logits": logits, "target": target}
    for key, value in change.items():
        args[key] = value.to(DEV) if isinstance(value, torch.Tensor) else value
    with pytest.raises(KernelInputError, match=f"cross_entropy: {message}"):
        kernels.cross_entropy(**args)


def test_target_on_another_device_is_refused() -> None:
    logits, _ = _good()
    with pytest.raises(KernelInputError, match="different devices"):
        kernels.cross_entropy(logits, torch.zeros(4, dtype=torch.int64, device="meta"))
