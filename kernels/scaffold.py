"""``python -m kernels new OP NAME``: start a variant from a file that passes the suite as generated.

The new file registers ``OP.NAME`` with the contract of the op's default (naive) variant: its dtypes, limits,
modes, backend needs and backward. It holds a ``@triton.jit`` skeleton to edit in place (a masked, blocked copy of
the first input into the output) and a ``USE_KERNEL = False`` switch: until the author flips it, its launcher calls
that variant's launcher, so the suite passes before any Triton code is written. Its docstring says so, and
``python -m kernels list`` shows it. The contributor
replaces the body with their kernel, narrows the contract to what the kernel supports, and bumps the version.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from dataclasses import dataclass
from pathlib import Path

from kernels import registry, spec, versioning
from kernels.errors import RegistrationError

ROOT = Path(__file__).resolve().parent.parent
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

TEMPLATE = '''"""{op}, {name}: DELEGATES TO {op}.{base} until edited. It has no kernel of its own yet.

Written by `python -m kernels new {op} {name}`. It registers the contract of {op}.{base} and calls its
launcher, so the suite passes as generated. To make it a variant:
  1. edit `_kernel` below in place (it is a masked, blocked copy of `{first}` into the output to start from) so
     that it computes {op}, set `USE_KERNEL = True`, and adapt `_launch` (write every element of `out`; take
     scratch from `kernels.memory.empty` so the tests can poison it);
  2. narrow the contract (dtypes, limits, modes, min_cc, interpreter) to what the kernel supports, and give it
     its own backward if it has one;
  3. replace this docstring's first line with one line on what the variant does differently;
  4. `nox -s lock`, then `nox -s tests-cpu` (and `nox -s tests-gpu` on a GPU).
See docs/adding-a-variant.md.
"""

import torch
import triton
import triton.language as tl

from kernels.registry import register
from {base_module} import {base_symbol} as _base

# The contract of {op}.{base}, spelled out so that you can narrow it.
DTYPES = ({dtypes})

# False: `{func}` delegates to {op}.{base}. Set it to True once `_kernel` computes {op}.
USE_KERNEL = False


@triton.jit
def _kernel(x_ptr, out_ptr, n_elements, BLOCK: tl.constexpr):
    """The skeleton to edit in place: each program handles one BLOCK of elements, masked at the tail, so that no
    load or store reaches past the end (the interpreter's bounds check fails the tests on one that would)."""
    pid = tl.program_id(0)
    offsets = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n_elements
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0)
    y = x  # <- the computation goes here (accumulate in float32: x.to(tl.float32))
    tl.store(out_ptr + offsets, y, mask=mask)


def _launch(x, out, BLOCK: int = 1024):
    """One program per BLOCK of the (contiguous) output; the copy's element count is the smaller of the two."""
    x, first = x.contiguous(), out[0] if isinstance(out, tuple) else out
    n_elements = min(x.numel(), first.numel())
    _kernel[(triton.cdiv(n_elements, BLOCK),)](x, first, n_elements, BLOCK=BLOCK)
    return out


@register(
    op="{op}",
    name="{name}",
    version="0.1.0",
    dtypes=DTYPES,
    min_cc={min_cc},
    interpreter={interpreter},
    limits={limits},
    modes={modes},
    deterministic={deterministic},
    {backward}
)
def {func}({params}):
    """Delegates to {op}.{base} (scaffold; no kernel of its own yet)."""
    if USE_KERNEL:
        return _launch({first}, {first_out})
    return _base.forward({args})
'''


def _dtype_expr(dtypes) -> str:
    names = [f"torch.{str(d).removeprefix('torch.')}" for d in dtypes]
    return ", ".join(names) + ("," if len(names) == 1 else "")


def _literal(value) -> str:
    """A Python literal in the style ruff format writes (double quotes), so the generated file passes lint."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple):
        inner = ", ".join(_literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def render(op: str, name: str) -> str:
    """The source of a new variant ``op.name`` delegating to the op's default variant."""
    op_spec = spec.get(op)
    names = {v.name for v in registry.variants_of(op)}
    base = registry.get(op, "naive" if "naive" in names else op_spec.default_variant)
    module = importlib.import_module(base.module)
    symbol = next(k for k, v in vars(module).items() if v is base)
    sig = inspect.signature(base.forward)
    params, args = [], []
    star_done = False
    for p in sig.parameters.values():
        if p.kind is p.KEYWORD_ONLY and not star_done:
            params.append("*")
            star_done = True
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            params.append(p.name if p.default is p.empty else f"{p.name}={_literal(p.default)}")
            args.append(p.name)
        elif p.kind is p.KEYWORD_ONLY:
            params.append(p.name if p.default is p.empty else f"{p.name}={_literal(p.default)}")
            args.append(f"{p.name}={p.name}")
        else:
            raise RegistrationError(f"{base.key}: cannot scaffold a launcher taking {p}")
    if base.backward is not None:
        backward = "backward=_base.backward,"
    elif base.no_backward:
        backward = f"no_backward={_literal(base.no_backward)},"
    else:
        backward = ""
    return TEMPLATE.format(
        op=op,
        name=name,
        base=base.name,
        base_module=base.module,
        base_symbol=symbol,
        func=f"{op}_{name}",
        dtypes=_dtype_expr(base.dtypes),
        min_cc=tuple(base.min_cc),
        interpreter="True" if base.interpreter else _literal(base.interpreter_reason),
        limits=_literal({k: tuple(v) for k, v in base.limits.items()}),
        modes=_literal(tuple(base.modes)),
        deterministic=base.deterministic,
        backward=backward,
        params=", ".join(params),
        args=", ".join(args),
        first=args[0],
        first_out="out" if "out" in sig.parameters else "None",
    )


def new_variant(op: str, name: str, *, root: Path = ROOT) -> Path:
    """Write ``variants/<op>/<name>.py``, register it, and add it to the lock. Returns the file's path."""
    registry.discover()
    if op not in spec.OPS:
        raise RegistrationError(f"unknown op {op!r}; known ops: {', '.join(sorted(spec.OPS))}")
    if not _NAME.match(name):
        raise RegistrationError(f"variant name {name!r} must be lower_snake_case (letters, digits, underscores)")
    if f"{op}.{name}" in {v.key for v in registry.all_variants()}:
        raise RegistrationError(f"variant {op}.{name} already exists")
    path = root / "variants" / op / f"{name}.py"
    if path.exists():
        raise RegistrationError(f"{path} already exists")
    path.write_text(render(op, name))
    try:
        importlib.import_module(f"variants.{op}.{name}")
        variant = registry.get(op, name)
        # Add the one new entry; every other entry stays exactly as locked (a kernel changed without a version
        # bump must still fail the suite, not be re-recorded here).
        lock = versioning.read_lock()
        entries = [_Entry(key, e.version, e.fingerprint) for key, e in lock.items()]
        entries.append(_Entry(variant.key, variant.version, variant.fingerprint))
        versioning.write_lock(entries)
    except Exception:
        path.unlink()
        raise
    return path


@dataclass(frozen=True)
class _Entry:
    key: str
    version: str
    fingerprint: str
