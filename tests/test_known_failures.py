"""The known-failure manifest stays honest: each entry is real, linked, and matches some test."""

from __future__ import annotations

import pytest
import torch

from kernels import cases, known_failures, registry

registry.discover()


@pytest.mark.parametrize("entry", known_failures.KNOWN_FAILURES, ids=lambda e: f"{e.variants[0]}-{e.backend}")
def test_entry_is_well_formed(entry: known_failures.KnownFailure) -> None:
    assert entry.link.startswith("https://github.com/"), "each entry links the upstream issue"
    assert entry.reason
    assert entry.backend in ("interpreter", "cuda")
    keys = [v.key for v in registry.all_variants()]
    backend_cases = cases.cases(entry.backend)
    for pattern in entry.variants:
        assert any(known_failures.fnmatch.fnmatchcase(k, pattern) for k in keys), f"{pattern} matches no variant"
        matched = [
            c
            for c in backend_cases
            if known_failures.fnmatch.fnmatchcase(c.variant.key, pattern)
            and (entry.dtypes is None or c.dtype in entry.dtypes)
        ]
        assert matched, f"{pattern}: the entry matches no test case: narrow or remove it"


def test_each_upstream_bug_is_declared_once() -> None:
    links = [(e.link, e.backend, e.triton_min, e.triton_below) for e in known_failures.KNOWN_FAILURES]
    assert len(links) == len(set(links)), "one entry per upstream bug: add the variants to its existing entry"


def test_version_bounds() -> None:
    entry = known_failures.KnownFailure(
        variants=("matmul.*",),
        dtypes=None,
        backend="interpreter",
        tests=("test_backward",),
        link="https://github.com/x/y/issues/1",
        reason="r",
        triton_min="3.2",
        triton_below="3.5.1",
    )
    kw = {"op": "matmul", "variant": "naive", "dtype": None, "backend": "interpreter", "test": "test_backward"}
    assert not entry.matches(**kw, triton="3.1.0")
    assert entry.matches(**kw, triton="3.2.0")
    assert entry.matches(**kw, triton="3.5.0+git1234")
    assert not entry.matches(**kw, triton="3.5.1")
    assert not entry.matches(**{**kw, "test": "test_deterministic"}, triton="3.3.0")


def test_an_unmet_interpreter_pin_is_reported_with_its_upstream_link(monkeypatch) -> None:
    """A GPU box brings its own numpy: Triton 3.6's interpreter with numpy 2.4 is the gap triton_matrix pins."""
    import importlib.metadata

    real = importlib.metadata.version
    for installed, unmet in (("2.4.0", True), ("2.3.5", False)):
        monkeypatch.setattr(
            importlib.metadata, "version", lambda name, v=installed: v if name == "numpy" else real(name)
        )
        found = known_failures.unmet_interpreter_pins("3.6.0")
        assert bool(found) == unmet, found
        if unmet:
            assert found[0].startswith(f"numpy<2.4 (numpy {installed} is installed)")
            assert "https://github.com/triton-lang/triton/issues/9171" in found[0]
    assert known_failures.unmet_interpreter_pins("3.9.0") == []


def _entry_for_here(**changes) -> known_failures.KnownFailure:
    import triton

    from kernels import backend

    fields = {
        "variants": ("softmax.naive",),
        "dtypes": (torch.float32,),
        "backend": backend.name(),
        "tests": ("test_matches_reference",),
        "link": "https://github.com/triton-lang/triton/issues/99999",
        "reason": "a made-up gap",
        "triton_min": triton.__version__,
    }
    return known_failures.KnownFailure(**(fields | changes))


def test_a_declared_breakage_is_refused_at_run_time_naming_the_issue(monkeypatch) -> None:
    """The manifest holds for every caller, not only the tests: the public API, cases.support (what the benchmarks
    and the bench command ask) and the suite's lifting all agree."""
    import triton

    import kernels
    from kernels import backend

    monkeypatch.setattr(known_failures, "KNOWN_FAILURES", (_entry_for_here(),))
    x = torch.randn(3, 5, device=backend.device())
    with pytest.raises(kernels.UnsupportedError, match=r"softmax.naive on float32 .*issues/99999") as caught:
        kernels.softmax(x, variant="naive")
    assert "a made-up gap" in str(caught.value)
    case = cases.Case(registry.get("softmax", "naive"), torch.float32, (3, 5))
    assert "issues/99999" in cases.support(case)
    assert cases.support(case, machine=False) is None, "the grid is the same on every machine"
    # Another dtype, another variant and an empty problem (no kernel is launched) are not refused.
    kernels.softmax(x.half(), variant="naive")
    kernels.softmax(x, variant="fused")
    assert kernels.softmax(x[:0], variant="naive").shape == (0, 5)
    # The suite lifts the refusal to meet the bug itself, so that its strict expected failure flips when fixed.
    with known_failures.lifted():
        torch.testing.assert_close(kernels.softmax(x, variant="naive"), torch.softmax(x, -1))
    with pytest.raises(kernels.UnsupportedError):
        kernels.softmax(x, variant="naive")
    # An entry for the tests' own machinery, or one a later Triton fixed, refuses nothing.
    for entry in (_entry_for_here(at_run_time=False), _entry_for_here(triton_below=triton.__version__)):
        monkeypatch.setattr(known_failures, "KNOWN_FAILURES", (entry,))
        kernels.softmax(x, variant="naive")


def test_bf16_matmul_in_the_interpreter_is_refused_not_garbage() -> None:
    """Issue 16: under the interpreter kernels.matmul on bf16 gave 4.97e10 where torch gives 3.64, with no error."""
    import kernels
    from kernels import backend

    if backend.name() != "interpreter":
        pytest.skip("the bf16 tl.dot gap is the interpreter's")
    a = torch.randn(16, 32, dtype=torch.bfloat16)
    b = torch.randn(32, 8, dtype=torch.bfloat16)
    for variant in (None, "naive"):
        with pytest.raises(
            kernels.UnsupportedError, match=r"matmul\.\w+ on bfloat16 .*triton-lang/triton/issues/11584"
        ):
            kernels.matmul(a, b, variant=variant)
    q = torch.randn(1, 2, 16, 16, dtype=torch.bfloat16)
    with pytest.raises(kernels.UnsupportedError, match="issues/11584"):
        kernels.attention(q, q, q)
    # float32 and float16 still run, and bf16 where no tl.dot is involved.
    torch.testing.assert_close(kernels.matmul(a.float(), b.float()), a.float() @ b.float(), atol=0.1, rtol=0.02)
    kernels.softmax(a)
