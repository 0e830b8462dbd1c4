"""docs/support-matrix.md is generated from the registry and the manifest, and kept current."""

from __future__ import annotations

import torch

from kernels import known_failures, registry, support


def test_the_support_matrix_page_is_current() -> None:
    assert support.PAGE.read_text() == support.render(), (
        "docs/support-matrix.md is out of date: run `python -m kernels support-matrix --write` and commit it"
    )


def test_cells_follow_the_contract_and_the_manifest() -> None:
    notes = {entry: i + 1 for i, entry in enumerate(known_failures.KNOWN_FAILURES)}
    fp8 = registry.get("matmul", "fp8")
    assert fp8.min_cc == (8, 9)
    assert support.cell(fp8, "sm_80", "3.9.0", notes) == "— (needs sm_89)"
    assert support.cell(fp8, "sm_90", "3.9.0", notes).startswith("e4m3")
    naive = registry.get("matmul", "naive")
    gap = next(
        e for e in known_failures.KNOWN_FAILURES if e.covers("matmul", "naive") and torch.bfloat16 in (e.dtypes or ())
    )
    assert f"bf16 ✗{notes[gap]}" in support.cell(naive, "interpreter", "3.9.0", notes)
    assert "✗" not in support.cell(naive, "sm_90", "3.9.0", notes)
