"""The case model: one (variant, dtype, shape, mode, pass) point, and the one rule for whether it can run.

Every consumer builds its cases here and asks ``support`` whether they can run: the correctness tests (every variant
x every dtype it declares x its op's shapes x modes, ``cases``), the asv suite (``kernels/benchsuite.py``), the bench
command (``kernels/bench.py``) and every public call (``kernels/dispatch.py``). A variant file that is added is
picked up here, and so tested and benchmarked, with no other edit.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass

import torch

from kernels import backend, registry, spec
from kernels.dtypes import short
from kernels.registry import Variant

SEED_ENV = "KERNELWATCH_SEED"
PASSES = ("fwd", "bwd")
"""A case's pass: the forward, or a backward after it (which needs a variant with a backward)."""


@dataclass(frozen=True)
class Case:
    variant: Variant
    dtype: torch.dtype
    shape: tuple[int, ...]
    mode: str = "default"
    direction: str = "fwd"
    """One of ``PASSES``. The two passes of a point share its ``id`` and ``key`` (so its inputs, drawn from the id,
    are the same in both): the tests and the asv reports keep them apart by test and by report key."""

    def __post_init__(self) -> None:
        if self.direction not in PASSES:
            raise ValueError(f"unknown pass {self.direction!r}; a case is one of {', '.join(PASSES)}")

    @property
    def op(self) -> str:
        return self.variant.op

    @property
    def spec(self) -> spec.OpSpec:
        # Derived, not stored: the variant names its op, so the two can never disagree.
        return self.variant.spec

    @property
    def id(self) -> str:
        """The test id, e.g. ``softmax-fused-v1.0.0-bf16-5x300``: it names the exact kernel."""
        v = self.variant
        text = f"{v.op}-{v.name}-v{v.version}-{short(self.dtype)}-{shape_label(self.shape)}"
        return text if self.mode == "default" else f"{text}-{self.mode}"

    @property
    def key(self) -> str:
        """The asv case key, ``variant|shape|dtype``: stored results are keyed by it, so it never changes form."""
        return case_key(self.variant.name, shape_label(self.shape), short(self.dtype))

    def generator(self, salt: str = "", device: torch.device | str = "cpu") -> torch.Generator:
        """A generator on ``device`` seeded from the session seed and this case, so every case draws its own fresh
        inputs each session, and a failure reproduces with the seed it prints (on the same kind of device: a CPU
        and a GPU generator draw different numbers from one seed)."""
        digest = hashlib.sha256(f"{session_seed()}:{self.id}:{salt}".encode()).digest()
        return torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "little"))

    def inputs(self, device=None, salt: str = "") -> spec.Inputs:
        """Fresh inputs, drawn where they will live: on a GPU a realistic case holds up to a few hundred million
        values (a 1024 x 256000 vocabulary's logits), which a CPU generator took seconds per test to draw."""
        device = torch.device(device or backend.device())
        return self.spec.make_inputs(self.shape, self.dtype, device, self.generator(salt, device), self.mode)


def case_key(variant: str, shape: str, dtype: str) -> str:
    return f"{variant}|{shape}|{dtype}"


def shape_label(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def support(case: Case, *, machine: bool = True) -> str | None:
    """Why ``case`` cannot run, or None when it can: the one place that decides.

    ``machine=False`` asks only what the case itself settles (dtype, mode, the variant's limits, a backward), which is
    what enumerating cases needs: the suite and the asv grid are the same on every machine, and a case this machine
    cannot run (no interpreter support, a GPU below the variant's compute capability) is reported as skipped with the
    reason, not left out. ``machine=True`` adds those checks first, as every call on this machine needs, and last
    the known breakages of this backend and Triton version (``kernels/known_failures.py``): a case the manifest
    declares broken is refused, naming the upstream issue, rather than run to a wrong answer (the tests lift that
    refusal to run the kernel into their strict expected failures, ``known_failures.lifted``)."""
    v = case.variant
    reason = v.unsupported_backend() if machine else None
    reason = reason or v.unsupported_dtype(case.dtype) or v.unsupported_mode(case.mode, case.dtype)
    if reason is None and 0 not in case.shape:
        # Only a problem with elements launches a kernel: for an empty one, dispatch returns the reference's empty or
        # constant result (with autograd connected), so neither the variant's limits nor its backward bind.
        reason = v.unsupported_shape(case.shape) or v.unsupported_pass(case.direction)
        if reason is None and machine:
            reason = _known_failure(case)
    return reason


def _known_failure(case: Case) -> str | None:
    import triton

    from kernels import known_failures

    return known_failures.refusal(
        op=case.op, variant=case.variant.name, dtype=case.dtype, backend=backend.name(), triton=triton.__version__
    )


def session_seed() -> int:
    """Fresh each run unless KERNELWATCH_SEED is set (the test header and failures print it)."""
    if SEED_ENV not in os.environ:
        os.environ[SEED_ENV] = str(secrets.randbelow(2**31))
    return int(os.environ[SEED_ENV])


def shapes_for(op_spec: spec.OpSpec, where: str) -> list[tuple[int, ...]]:
    return list(op_spec.cpu_shapes if where == "interpreter" else op_spec.gpu_shapes)


def cases(where: str, variants: list[Variant] | None = None, *, direction: str = "fwd") -> list[Case]:
    """The test cases of one pass for a backend (``"interpreter"`` or ``"cuda"``), in a stable order: each variant x
    each dtype it declares x each mode it declares x the backend's shapes of its op, where ``support`` allows.
    Checks of the machine are left to the run (tests/conftest.py skips with the reason), so every machine collects
    the same tests."""
    return [
        case
        for variant in (variants if variants is not None else registry.all_variants())
        for dtype in variant.dtypes
        for mode in variant.modes
        for shape in shapes_for(variant.spec, where)
        if support(case := Case(variant, dtype, tuple(shape), mode, direction), machine=False) is None
    ]
