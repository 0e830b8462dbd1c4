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
    variants: tuple[str, ...]
    """fnmatch patterns over variant keys ``op.variant``, e.g. ``("matmul.*", "conv2d.fused")``: every variant one
    upstream bug breaks, so that each bug is declared once."""
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

    def covers(self, op: str, variant: str) -> bool:
        return any(fnmatch.fnmatchcase(f"{op}.{variant}", pattern) for pattern in self.variants)

    def matches(self, *, op: str, variant: str, dtype: torch.dtype, backend: str, test: str, triton: str) -> bool:
        return (
            self.covers(op, variant)
            and (self.dtypes is None or dtype in self.dtypes)
            and backend == self.backend
            and test in self.tests
            and _version(triton) >= _version(self.triton_min)
            and (self.triton_below is None or _version(triton) < _version(self.triton_below))
        )

    def describe(self) -> str:
        return f"known failure: {self.reason} ({self.link})"


# Tests a gap in the arithmetic of a dtype breaks: anything that compares values.
VALUE_TESTS = ("test_matches_reference", "test_backward", "test_agrees_with_naive", "test_special_values")

KNOWN_FAILURES: tuple[KnownFailure, ...] = (
    KnownFailure(
        # Every variant whose forward or backward runs tl.dot on bf16 tiles. conv2d's naive direct convolution has
        # no tl.dot and passes bf16 in the interpreter.
        variants=(
            "matmul.*",
            "lora_linear.*",
            "int8_matmul.*",
            "conv2d.implicit_gemm",
            "conv2d.fused",
            "conv2d.splitk",
            "attention.*",
            "windowed_rope_attention.*",
        ),
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


def unmet_interpreter_pins(triton_version: str | None = None) -> list[str]:
    """The pins kernels/triton_matrix.py declares for this Triton version's interpreter that the installed packages
    break, each as "requirement (installed version): why", the why naming the upstream issue.

    tests-cpu and tests-triton install those pins, but a GPU box brings its own packages: there, tests that start
    the interpreter in a subprocess (the scaffold and asv smoke checks) meet the gap the pin works around. Each
    such gap is then a strict expected failure of those tests (tests/conftest.py), with the reason declared once,
    in the matrix."""
    import importlib.metadata

    from packaging.requirements import Requirement

    from kernels.triton_matrix import VERSIONS

    if triton_version is None:
        import triton

        triton_version = triton.__version__
    unmet = []
    for text, why in VERSIONS.get(triton_version.split("+")[0], {}).items():
        requirement = Requirement(text)
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            unmet.append(f"{text} ({requirement.name} {installed} is installed): {why}")
    return unmet
