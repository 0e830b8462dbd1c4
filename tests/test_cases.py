"""The case model: a case's names, and ``cases.support``, the one rule every consumer asks whether a case can run.

Each reason ``support`` gives is checked here, and each one ``dispatch.run`` can meet is checked to reach the caller
word for word: the tests, the benchmarks and a public call refuse a case for the same reason."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from kernels import backend, cases, dispatch, registry, spec
from kernels.errors import UnsupportedError

registry.discover()
E4M3 = torch.float8_e4m3fn


def _case(op: str, name: str, dtype, shape, mode: str = "default", direction: str = "fwd") -> cases.Case:
    return cases.Case(registry.get(op, name), dtype, tuple(shape), mode, direction)


def _refused(case: cases.Case, inputs: spec.Inputs) -> str:
    """What ``dispatch.run`` says when it refuses these inputs."""
    with pytest.raises(UnsupportedError) as refused:
        dispatch.run(case.op, inputs, variant=case.variant.name)
    return str(refused.value)


def test_a_case_keeps_its_names() -> None:
    softmax = _case("softmax", "fused", torch.bfloat16, (5, 300))
    version = softmax.variant.version
    # Test ids and asv keys are stored (test reports, results files): their form must not change.
    assert softmax.id == f"softmax-fused-v{version}-bf16-5x300"
    assert softmax.key == "fused|5x300|bf16"
    assert softmax.spec is spec.get("softmax") and softmax.op == "softmax"
    epilogue = _case("matmul", "fused", torch.float32, (3, 4, 5), "epilogue")
    assert epilogue.id.endswith("-f32-3x4x5-epilogue") and epilogue.key == "fused|3x4x5|f32"
    # The two passes of a point share its names, and so its inputs.
    backward = dataclasses.replace(softmax, direction="bwd")
    assert backward.id == softmax.id and backward.key == softmax.key
    assert torch.equal(backward.inputs(salt="x")["x"], softmax.inputs(salt="x")["x"])
    with pytest.raises(ValueError, match="unknown pass 'fwd\\+bwd'"):
        dataclasses.replace(softmax, direction="fwd+bwd")


def test_a_supported_case_has_no_reason() -> None:
    assert cases.support(_case("softmax", "fused", torch.bfloat16, (5, 300), direction="bwd")) is None


def test_a_dtype_the_variant_does_not_declare() -> None:
    case = _case("matmul", "naive", torch.float64, (4, 4, 4))
    reason = cases.support(case)
    assert reason == cases.support(case, machine=False)
    assert reason.startswith("matmul.naive v") and "does not support dtype torch.float64; it supports f32" in reason
    a = torch.randn(4, 4, dtype=torch.float64, device=backend.device())
    assert _refused(case, {"a": a, "b": a}) == f"matmul: {reason}"


def test_a_mode_the_variant_does_not_declare() -> None:
    case = _case("matmul", "naive", torch.float32, (4, 4, 4), "epilogue")
    reason = cases.support(case, machine=False)
    assert reason == "matmul.naive does not take 'epilogue' inputs; variants that do: fused"
    inputs = spec.get("matmul").make_inputs((4, 4, 4), torch.float32, backend.device(), case.generator(), "epilogue")
    assert _refused(case, inputs) == f"matmul: {reason}"


def test_a_declared_mode_the_dtype_does_not_allow(monkeypatch) -> None:
    # No registered variant declares such a pair (registration does not forbid it): an fp8 matmul that also claimed
    # the unscaled mode, which the op allows only for 16- and 32-bit operands.
    fp8 = registry.get("matmul", "fp8")
    claims_default = dataclasses.replace(fp8, modes=("default", *fp8.modes))
    case = cases.Case(claims_default, E4M3, (16, 16, 16), "default")
    assert cases.support(case, machine=False) == "matmul mode 'default' does not take e4m3 inputs"


def test_a_shape_past_the_variants_limits() -> None:
    case = _case("softmax", "fused", torch.float32, (2, 32769))
    reason = cases.support(case, machine=False)
    assert reason == f"softmax.fused v{case.variant.version} supports 1 <= cols <= 32768, got cols=32769"
    assert _refused(case, {"x": torch.randn(2, 32769, device=backend.device())}) == f"softmax: {reason}"


def test_a_backward_case_of_an_op_without_one() -> None:
    quantize = registry.get("quantize", "naive")
    case = cases.Case(quantize, torch.bfloat16, (4, 8), quantize.modes[0], "bwd")
    assert cases.support(case) == "quantize has no backward"
    assert cases.support(dataclasses.replace(case, direction="fwd")) is None


def test_a_backward_case_of_a_variant_without_one(monkeypatch) -> None:
    fused = registry.get("softmax", "fused")
    inference_only = dataclasses.replace(fused, backward=None, no_backward="kept for inference")
    monkeypatch.setitem(registry._VARIANTS, fused.key, inference_only)
    case = cases.Case(inference_only, torch.float32, (2, 8), "default", "bwd")
    reason = cases.support(case, machine=False)
    assert reason == "softmax.fused has no backward: kept for inference"
    assert cases.support(dataclasses.replace(case, direction="fwd")) is None
    # A call that autograd records is a backward case; the same call without a gradient is not.
    x = torch.randn(2, 8, device=backend.device())
    assert _refused(case, {"x": x.requires_grad_()}) == f"softmax: {reason}"
    assert dispatch.run("softmax", {"x": x.detach()}, variant="fused").shape == (2, 8)


def test_an_empty_problem_is_always_supported() -> None:
    # Nothing launches (dispatch returns the reference's result), so the limits and the backward do not bind...
    assert cases.support(_case("softmax", "fused", torch.float32, (2, 0), direction="bwd")) is None
    assert cases.support(_case("matmul", "fp8", E4M3, (0, 16, 16), "scaled_tensor", "bwd"), machine=False) is None
    # ...but the inputs must still be ones the variant takes.
    assert "does not support dtype" in cases.support(_case("softmax", "fused", torch.float64, (2, 0)))


def test_a_variant_the_interpreter_cannot_run(monkeypatch) -> None:
    monkeypatch.setattr(backend, "name", lambda: "interpreter")
    naive = registry.get("softmax", "naive")
    blocked = dataclasses.replace(naive, interpreter=False, interpreter_reason="uses inline PTX")
    monkeypatch.setitem(registry._VARIANTS, naive.key, blocked)
    case = cases.Case(blocked, torch.float32, (2, 8))
    reason = cases.support(case)
    assert reason == "softmax.naive does not run in Triton's interpreter: uses inline PTX"
    # Enumeration leaves the machine out: the case is collected, and skipped with this reason (tests/conftest.py).
    assert cases.support(case, machine=False) is None
    assert any(c.variant is blocked for c in cases.cases("interpreter", [blocked]))
    if backend.device().type == "cpu":
        assert _refused(case, {"x": torch.randn(2, 8)}) == f"softmax: {reason}"


def test_a_gpu_below_the_variants_compute_capability(monkeypatch) -> None:
    monkeypatch.setattr(backend, "name", lambda: "cuda")
    monkeypatch.setattr(backend, "capability", lambda index=0: (8, 0))
    case = _case("matmul", "fp8", E4M3, (16, 16, 16), "scaled_tensor")
    assert cases.support(case) == "matmul.fp8 needs compute capability 8.9, this GPU has 8.0"
    assert cases.support(case, machine=False) is None
    monkeypatch.setattr(backend, "capability", lambda index=0: (9, 0))
    assert cases.support(case) is None


def test_the_reasons_come_in_one_order() -> None:
    # A case wrong in every way is refused for its first fault: the machine, then dtype, mode, shape and pass.
    case = _case("softmax", "fused", torch.float64, (2, 32769), "residual", "bwd")
    assert "does not support dtype" in cases.support(case)
    case = dataclasses.replace(case, dtype=torch.float32)
    assert "does not take 'residual' inputs" in cases.support(case)
    case = dataclasses.replace(case, mode="default")
    assert "supports 1 <= cols <= 32768" in cases.support(case)


def test_the_test_cases_are_those_support_allows() -> None:
    every = cases.cases("cuda")
    assert every and all(cases.support(c, machine=False) is None for c in every)
    backward = cases.cases("cuda", direction="bwd")
    assert [c.id for c in backward] == [c.id for c in every if c.spec.has_backward and c.variant.backward]
    # A shape past a variant's limits is no case of it.
    fused = registry.get("softmax", "fused")
    assert {c.shape[1] for c in cases.cases("cuda", [fused])} <= set(range(1, 32769))
