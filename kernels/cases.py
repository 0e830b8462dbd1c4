"""Test cases derived from the registry: every variant x every dtype it declares x its op's shapes x modes.

A variant file that is added is picked up here, and so tested and benchmarked, with no other edit.
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


@dataclass(frozen=True)
class Case:
    variant: Variant
    dtype: torch.dtype
    shape: tuple[int, ...]
    mode: str = "default"

    @property
    def op(self) -> str:
        return self.variant.op

    @property
    def spec(self) -> spec.OpSpec:
        return self.variant.spec

    @property
    def id(self) -> str:
        v = self.variant
        text = f"{v.op}-{v.name}-v{v.version}-{short(self.dtype)}-{'x'.join(map(str, self.shape))}"
        return text if self.mode == "default" else f"{text}-{self.mode}"

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


def session_seed() -> int:
    """Fresh each run unless KERNELWATCH_SEED is set (the test header and failures print it)."""
    if SEED_ENV not in os.environ:
        os.environ[SEED_ENV] = str(secrets.randbelow(2**31))
    return int(os.environ[SEED_ENV])


def shapes_for(op_spec: spec.OpSpec, where: str) -> list[tuple[int, ...]]:
    return list(op_spec.cpu_shapes if where == "interpreter" else op_spec.gpu_shapes)


def cases(where: str, variants: list[Variant] | None = None) -> list[Case]:
    """All cases for a backend (``"interpreter"`` or ``"cuda"``), in a stable order."""
    out = []
    for variant in variants if variants is not None else registry.all_variants():
        op_spec = variant.spec
        for dtype in variant.dtypes:
            for mode in variant.modes:
                if not op_spec.mode_allows(mode, dtype):
                    continue
                for shape in shapes_for(op_spec, where):
                    if variant.unsupported_shape(shape) is None:
                        out.append(Case(variant, dtype, tuple(shape), mode))
    return out
