"""The known-failure manifest stays honest: each entry is real, linked, and matches some test."""

from __future__ import annotations

import pytest

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
