"""The known-failure manifest stays honest: each entry is real, linked, and matches some test."""

from __future__ import annotations

import pytest

from kernels import cases, known_failures, registry

registry.discover()


@pytest.mark.parametrize("entry", known_failures.KNOWN_FAILURES, ids=lambda e: f"{e.op}-{e.variants}-{e.backend}")
def test_entry_is_well_formed(entry: known_failures.KnownFailure) -> None:
    assert entry.link.startswith("https://github.com/"), "each entry links the upstream issue"
    assert entry.reason
    assert entry.backend in ("interpreter", "cuda")
    names = [v.name for v in registry.variants_of(entry.op)]
    assert any(known_failures.fnmatch.fnmatchcase(n, entry.variants) for n in names), "pattern matches no variant"
    matched = [
        c
        for c in cases.cases(entry.backend)
        if c.op == entry.op
        and known_failures.fnmatch.fnmatchcase(c.variant.name, entry.variants)
        and (entry.dtypes is None or c.dtype in entry.dtypes)
    ]
    assert matched, "the entry matches no test case: remove it"


def test_version_bounds() -> None:
    entry = known_failures.KnownFailure(
        op="matmul",
        variants="*",
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
