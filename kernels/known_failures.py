"""The one manifest of known breakages: interpreter gaps and Triton-version breakages.

Each entry becomes a *strict* expected failure on the tests it names, so the day upstream fixes the bug the
test passes, the run fails, and the entry must be removed. Never loosen a tolerance or skip a test instead.

An entry also holds at run time (``at_run_time``, the default): ``kernels.cases.support`` refuses every call of a
case it covers with an ``UnsupportedError`` naming the upstream issue, so the public API, the benchmarks and the bench
command never hand back the wrong answers the tests expect. The tests that measure the gap run the kernel with the
refusal lifted (``lifted()``, which tests/conftest.py enters for every generated case), so their strict expected
failure still flips the day upstream fixes the bug.
"""

from __future__ import annotations

import contextlib
import contextvars
import fnmatch
from collections.abc import Iterator
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
    at_run_time: bool = True
    """Every call of a covered case is broken, not only the named tests (a wrong answer, a crash): ``refusal`` makes
    ``kernels.cases.support`` refuse it. False for a breakage of the tests' own machinery alone."""

    def covers(self, op: str, variant: str) -> bool:
        return any(fnmatch.fnmatchcase(f"{op}.{variant}", pattern) for pattern in self.variants)

    def applies(self, *, op: str, variant: str, dtype: torch.dtype, backend: str, triton: str) -> bool:
        """The bug is present for this case on this backend and Triton version (whatever the test)."""
        return (
            self.covers(op, variant)
            and (self.dtypes is None or dtype in self.dtypes)
            and backend == self.backend
            and _version(triton) >= _version(self.triton_min)
            and (self.triton_below is None or _version(triton) < _version(self.triton_below))
        )

    def matches(self, *, op: str, variant: str, dtype: torch.dtype, backend: str, test: str, triton: str) -> bool:
        return test in self.tests and self.applies(op=op, variant=variant, dtype=dtype, backend=backend, triton=triton)

    def describe(self) -> str:
        return f"known failure: {self.reason} ({self.link})"

    def refuse(self, *, op: str, variant: str, dtype: torch.dtype, backend: str, triton: str) -> str:
        """The run-time refusal's reason: what is broken, where, and the upstream issue."""
        where = "Triton's interpreter" if backend == "interpreter" else "CUDA"
        return (
            f"{op}.{variant} on {str(dtype).removeprefix('torch.')} is refused in {where} with triton {triton}, "
            f"which would give wrong results: {self.reason} ({self.link})"
        )


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


_LIFTED: contextvars.ContextVar[bool] = contextvars.ContextVar("kernelwatch_known_failures_lifted", default=False)


@contextlib.contextmanager
def lifted() -> Iterator[None]:
    """Run covered cases anyway, inside this block: for the tests, whose strict expected failures must meet the bug
    itself (and so pass, and fail the run, the day upstream fixes it), never for callers who want an answer."""
    token = _LIFTED.set(True)
    try:
        yield
    finally:
        _LIFTED.reset(token)


def refusal(*, op: str, variant: str, dtype: torch.dtype, backend: str, triton: str) -> str | None:
    """Why a call of this case is refused at run time (an ``at_run_time`` entry applies), or None; None inside
    ``lifted()``."""
    if _LIFTED.get():
        return None
    for entry in KNOWN_FAILURES:
        if entry.at_run_time and entry.applies(op=op, variant=variant, dtype=dtype, backend=backend, triton=triton):
            return entry.refuse(op=op, variant=variant, dtype=dtype, backend=backend, triton=triton)
    return None


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
