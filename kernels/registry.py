"""The variant registry: every kernel variant, registered on its function with its contract.

    @register(op="softmax", name="fused", version="1.0.0", dtypes=FLOATS, limits={"cols": (1, 32768)})
    def softmax_fused(x, *, out): ...

``discover()`` imports every module under ``variants/``. A file that fails to import raises
``VariantImportError`` naming the file; it is never dropped silently.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kernels import backend, spec, usage
from kernels.dtypes import short
from kernels.errors import KernelInputError, RegistrationError, VariantImportError

_SEMVER = re.compile(r"^\d+\.\d+\.\d+$")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Variant:
    op: str
    name: str
    version: str
    forward: Callable
    """``forward(**inputs, out=out) -> out``: writes the result into ``out`` and returns it."""
    dtypes: tuple[torch.dtype, ...]
    min_cc: tuple[int, int] = (8, 0)
    interpreter: bool = True
    interpreter_reason: str = ""
    limits: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Inclusive (low, high) bounds on named problem dimensions, e.g. ``{"cols": (1, 32768)}``."""
    deterministic: bool = True
    modes: tuple[str, ...] = ("default",)
    backward: Callable | None = None
    """``backward(inputs, out, grad_out) -> {input_name: grad}``; required when the op has a backward,
    unless ``no_backward`` says why not."""
    no_backward: str = ""
    description: str = ""
    module: str = ""
    source_file: str = ""
    extra_sources: tuple[Callable, ...] = ()
    """Code the fingerprint must cover that the launchers do not reach by name (rare)."""
    backward_reads: tuple[str, ...] | None = None
    """The tensor inputs (and ``"out"``, the forward's result) whose *values* the backward reads; autograd keeps
    only these alive until backward. The others reach backward as one-element stand-ins of the right shape, dtype
    and device, enough for ``memory.empty_like``. None (the default) keeps them all."""
    wants_stash: bool = False
    """The launcher takes a ``stash`` parameter: a dict when a backward will follow (what forward puts there reaches
    backward as ``inputs["stash"]``, e.g. a gradient computed in the forward pass), None when none will."""

    @property
    def key(self) -> str:
        return f"{self.op}.{self.name}"

    @property
    def spec(self) -> spec.OpSpec:
        return spec.get(self.op)

    @property
    def fingerprint(self) -> str:
        from kernels import versioning

        return versioning.fingerprint(self)

    def __call__(self, **inputs):
        """Run through the public entry point (validation, autograd) with this variant."""
        from kernels import dispatch

        return dispatch.run(self.op, inputs, variant=self.name)

    # -- what this variant can run: the primitives kernels.cases.support composes, in one order -------
    def unsupported_dtype(self, dtype: torch.dtype) -> str | None:
        if dtype not in self.dtypes:
            names = ", ".join(short(d) for d in self.dtypes)
            return f"{self.key} v{self.version} does not support dtype {dtype}; it supports {names}"
        return None

    def unsupported_mode(self, mode: str, dtype: torch.dtype) -> str | None:
        if mode not in self.modes:
            # Name the variants that do take it: the caller asked for these inputs, not for this variant.
            able = [v.name for v in variants_of(self.op) if mode in v.modes]
            return f"{self.key} does not take {mode!r} inputs; variants that do: {', '.join(able) or 'none'}"
        if not self.spec.mode_allows(mode, dtype):
            return f"{self.op} mode {mode!r} does not take {short(dtype)} inputs"
        return None

    def unsupported_shape(self, shape: tuple[int, ...]) -> str | None:
        dims = self.spec.dims
        for dim, (low, high) in self.limits.items():
            value = shape[dims.index(dim)]
            if not low <= value <= high:
                return f"{self.key} v{self.version} supports {low} <= {dim} <= {high}, got {dim}={value}"
        return None

    def unsupported_pass(self, direction: str) -> str | None:
        """Why this variant cannot run ``direction`` ("fwd" or "bwd"), or None: only a backward can be missing."""
        if direction == "fwd":
            return None
        if not self.spec.has_backward:
            return f"{self.op} has no backward"
        if self.backward is None:
            return f"{self.key} has no backward: {self.no_backward}"
        return None

    def unsupported_backend(self) -> str | None:
        """Why this variant cannot run on the current backend, or None."""
        where = backend.name()
        if where == "interpreter":
            if not self.interpreter:
                return f"{self.key} does not run in Triton's interpreter: {self.interpreter_reason}"
            return None
        cc = backend.capability()
        if cc is not None and cc < self.min_cc:
            return (
                f"{self.key} needs compute capability {self.min_cc[0]}.{self.min_cc[1]}, this GPU has {cc[0]}.{cc[1]}"
            )
        return None


_VARIANTS: dict[str, Variant] = {}
_discovered = False


def register(
    *,
    op: str,
    name: str,
    version: str,
    dtypes: Iterable[torch.dtype],
    min_cc: tuple[int, int] = (8, 0),
    interpreter: bool | str = True,
    limits: dict[str, tuple[int, int]] | None = None,
    deterministic: bool = True,
    modes: Iterable[str] = ("default",),
    backward: Callable | None = None,
    no_backward: str = "",
    extra_sources: Iterable[Callable] = (),
    backward_reads: Iterable[str] | None = None,
) -> Callable[[Callable], Variant]:
    """Register the decorated launcher as variant ``name`` of ``op``.

    ``interpreter`` is True, or a string giving the reason the variant cannot run in Triton's interpreter.
    """

    def decorate(fn: Callable) -> Variant:
        module = sys.modules.get(fn.__module__)
        source_file = getattr(module, "__file__", "") or ""
        if not _NAME.match(name):
            raise RegistrationError(f"variant name {name!r} must be lower_snake_case")
        if not _SEMVER.match(version):
            raise RegistrationError(f"{op}.{name}: version {version!r} is not MAJOR.MINOR.PATCH")
        try:
            op_spec = spec.get(op)
        except KeyError as exc:
            raise RegistrationError(f"{fn.__module__}: {exc.args[0]}") from None
        parts = fn.__module__.split(".")
        if parts[0] == "variants" and (len(parts) < 3 or parts[1] != op):
            raise RegistrationError(f"{fn.__module__}: a variant of op {op!r} must live in variants/{op}/")
        bad_modes = set(modes) - set(op_spec.modes)
        if bad_modes:
            raise RegistrationError(f"{op}.{name}: unknown modes {sorted(bad_modes)}; op has {op_spec.modes}")
        for dim in limits or {}:
            if dim not in op_spec.dims:
                raise RegistrationError(f"{op}.{name}: limit on unknown dim {dim!r}; op dims are {op_spec.dims}")
        reads = None if backward_reads is None else tuple(backward_reads)
        if reads is not None and backward is None:
            raise RegistrationError(f"{op}.{name}: backward_reads without a backward")
        unknown = set(reads or ()) - (set(inspect.signature(fn).parameters) - {"stash"})
        if unknown:
            raise RegistrationError(
                f"{op}.{name}: backward_reads names {sorted(unknown)}, which are not inputs of the launcher"
            )
        if op_spec.has_backward and backward is None and not no_backward:
            raise RegistrationError(f"{op}.{name}: op {op} has a backward; give backward=... or no_backward='<reason>'")
        variant = Variant(
            op=op,
            name=name,
            version=version,
            forward=fn,
            dtypes=tuple(dtypes),
            min_cc=tuple(min_cc),
            interpreter=interpreter is True,
            interpreter_reason="" if interpreter is True else str(interpreter),
            limits=dict(limits or {}),
            deterministic=deterministic,
            modes=tuple(modes),
            backward=backward,
            no_backward=no_backward,
            description=(fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else "",
            module=fn.__module__,
            source_file=source_file,
            extra_sources=tuple(extra_sources),
            backward_reads=reads,
            wants_stash="stash" in inspect.signature(fn).parameters,
        )
        if variant.key in _VARIANTS and _VARIANTS[variant.key].module != variant.module:
            raise RegistrationError(
                f"variant {variant.key} is registered twice: in {_VARIANTS[variant.key].module} and {fn.__module__}"
            )
        _VARIANTS[variant.key] = variant
        return variant

    return decorate


def discover() -> None:
    """Import the op specs and every module under ``variants/`` (once)."""
    global _discovered
    if _discovered:
        return
    import kernels.ops  # noqa: F401  (defines the specs)
    import variants

    errors = []
    for info in sorted(pkgutil.walk_packages(variants.__path__, "variants."), key=lambda i: i.name):
        path = Path(info.module_finder.path) / (info.name.rsplit(".", 1)[-1] + ("" if info.ispkg else ".py"))
        try:
            importlib.import_module(info.name)
        except Exception as exc:
            errors.append(f"  {path}: {type(exc).__name__}: {exc}")
            continue
        helper = info.name.rsplit(".", 1)[-1].startswith("_")
        if not info.ispkg and not helper and not any(v.module == info.name for v in _VARIANTS.values()):
            errors.append(f"  {path}: registers no variant (name helper modules with a leading underscore)")
    if errors:
        raise VariantImportError(
            "variant files failed to import (a broken variant is never dropped silently):\n" + "\n".join(errors)
        )
    _discovered = True


def _sorted() -> list[Variant]:
    discover()
    return sorted(_VARIANTS.values(), key=lambda v: (v.op, v.name != "naive", v.name))


def all_variants() -> list[Variant]:
    usage.used_catalogue()  # the caller may depend on every variant (tests/ledger.py keys it on all of them)
    return _sorted()


def variants_of(op: str) -> list[Variant]:
    spec.get(op)
    found = [v for v in _sorted() if v.op == op]
    usage.used(*found)
    return found


def get(op: str, name: str | None = None) -> Variant:
    """Variant ``name`` of ``op``; None (and only None) picks the op's default. An unknown name, the empty string
    included, raises ``KernelInputError`` listing the op's variants: a caller's typo never runs another kernel."""
    discover()
    op_spec = spec.get(op)
    if name is None:
        name = op_spec.default_variant
    found = _VARIANTS.get(f"{op}.{name}") if isinstance(name, str) else None
    if found is None:
        known = ", ".join(v.name for v in variants_of(op))
        raise KernelInputError(
            f"op {op} has no variant {name!r}; its variants are: {known} (or variant=None for the default, "
            f"{op_spec.default_variant})"
        )
    usage.used(found)
    return found
