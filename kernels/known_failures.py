"""The one manifest of known breakages: interpreter gaps and Triton-version breakages.

Each entry becomes a *strict* expected failure on the tests it names, so the day upstream fixes the bug the
test passes, the run fails, and the entry must be removed. Never loosen a tolerance or skip a test instead.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import torch


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


@dataclass(frozen=True)
class KnownFailure:
    op: str
    variants: str
    """fnmatch pattern over variant names, e.g. ``"*"`` or ``"splitk*"``."""
    dtypes: tuple[torch.dtype, ...] | None
    """Operand dtypes affected; None for all."""
    backend: str
    """``"interpreter"`` or ``"cuda"``."""
    tests: tuple[str, ...]
    """Test function names affected."""
    link: str
    """The upstream issue or pull request."""
    reason: str
    triton_min: str = "0"
    """First affected Triton version (inclusive)."""
    triton_below: str | None = None
    """First fixed Triton version (exclusive bound); None while unfixed."""

    def matches(self, *, op: str, variant: str, dtype: torch.dtype, backend: str, test: str, triton: str) -> bool:
        return (
            op == self.op
            and fnmatch.fnmatchcase(variant, self.variants)
            and (self.dtypes is None or dtype in self.dtypes)
            and backend == self.backend
            and test in self.tests
            and _version(triton) >= _version(self.triton_min)
            and (self.triton_below is None or _version(triton) < _version(self.triton_below))
        )

    def describe(self) -> str:
        return f"known failure: {self.reason} ({self.link})"


# Tests a gap in the arithmetic of a dtype breaks: anything that compares values.
VALUE_TESTS = ("test_matches_reference", "test_backward", "test_agrees_with_naive")

KNOWN_FAILURES: tuple[KnownFailure, ...] = (
    KnownFailure(
        op="matmul",
        variants="*",
        dtypes=(torch.bfloat16,),
        backend="interpreter",
        tests=VALUE_TESTS,
        link="https://github.com/triton-lang/triton/issues/11584",
        reason="the interpreter stores bf16 as uint16 and tl.dot multiplies the bit patterns",
    ),
    KnownFailure(
        op="lora_linear",
        variants="*",
        dtypes=(torch.bfloat16,),
        backend="interpreter",
        tests=VALUE_TESTS,
        link="https://github.com/triton-lang/triton/issues/11584",
        reason="the interpreter stores bf16 as uint16 and tl.dot multiplies the bit patterns",
    ),
    KnownFailure(
        op="windowed_rope_attention",
        variants="*",
        dtypes=(torch.bfloat16,),
        backend="interpreter",
        tests=VALUE_TESTS,
        link="https://github.com/triton-lang/triton/issues/11584",
        reason="the interpreter stores bf16 as uint16 and tl.dot multiplies the bit patterns",
    ),
)


def lookup(*, op: str, variant: str, dtype: torch.dtype, backend: str, test: str, triton: str) -> KnownFailure | None:
    for entry in KNOWN_FAILURES:
        if entry.matches(op=op, variant=variant, dtype=dtype, backend=backend, test=test, triton=triton):
            return entry
    return None
