"""Kernel versioning: a fingerprint of each variant's source, and ``variants.lock``.

The fingerprint covers what decides the kernel's behaviour: the registered launcher, its backward, every
``@triton.jit`` function they reach (through any number of helpers in ``variants/``), the autotune configs,
and module-level constants they read. Comments, docstrings and blank lines do not count, so a tidy-up needs
no version bump; a change to code does.

The source is normalized line by line rather than through ``ast.dump`` so that the fingerprint is the same on
every Python and Triton version a CI or GPU runner uses.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import io
import json
import os
import textwrap
import tokenize
import tomllib
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCK_NAME = "variants.lock"
_FINGERPRINT_SCHEME = "src1"  # bump when the normalization below changes


def _normalized_source(fn: types.FunctionType) -> str:
    src = textwrap.dedent(inspect.getsource(fn))
    lines = src.splitlines()
    drop: set[int] = set()  # 1-based line numbers of docstrings
    cut: dict[int, int] = {}  # line -> column where a comment starts
    tree = ast.parse(src)
    for node in ast.walk(tree):
        # The registration decorator carries the version and the contract, not the kernel: leave it out, so a
        # version bump alone does not move the fingerprint.
        for deco in getattr(node, "decorator_list", []):
            target = deco.func if isinstance(deco, ast.Call) else deco
            name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
            if name == "register":
                drop.update(range(deco.lineno, deco.end_lineno + 1))
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                drop.update(range(body[0].lineno, body[0].end_lineno + 1))
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            cut[tok.start[0]] = tok.start[1]
    out = []
    for number, line in enumerate(lines, start=1):
        if number in drop:
            continue
        if number in cut:
            line = line[: cut[number]]
        line = line.rstrip()
        if line:
            out.append(line)
    return "\n".join(out)


def _unwrap(obj: Any, parts: list[str]) -> Any:
    """Peel Triton's wrappers (Autotuner, Heuristics, JITFunction, InterpretedFunction) down to the Python
    function, recording what the wrappers add (autotune configs and keys, heuristics)."""
    for _ in range(8):
        if inspect.isfunction(obj):
            return obj
        configs = getattr(obj, "configs", None)
        if configs is not None and isinstance(configs, list | tuple):
            keys = getattr(obj, "keys", None) or getattr(obj, "key", None)
            parts.append(f"autotune keys={list(keys) if keys else []}")
            parts.extend(f"config {_config_repr(c)}" for c in configs)
            # Pruning and performance-model hooks decide which config runs, so they are part of the kernel.
            for hook in ("early_config_prune", "perf_model"):
                fn = getattr(obj, hook, None)
                if inspect.isfunction(fn):
                    parts.append(f"{hook}:\n{_normalized_source(fn)}")
        values = getattr(obj, "values", None)
        if isinstance(values, dict):
            for k, v in sorted(values.items()):
                if inspect.isfunction(v):
                    parts.append(f"heuristic {k}:\n{_normalized_source(v)}")
        nxt = getattr(obj, "fn", None)
        if nxt is None or nxt is obj:
            return None
        obj = nxt
    return None


def _config_repr(config: Any) -> str:
    kwargs = dict(sorted(getattr(config, "kwargs", {}).items()))
    fields = {k: getattr(config, k, None) for k in ("num_warps", "num_stages", "num_ctas", "maxnreg")}
    return json.dumps({"kwargs": kwargs, **{k: v for k, v in fields.items() if v is not None}}, sort_keys=True)


def _is_ours(obj: Any) -> bool:
    """Whether ``obj`` is code from variants/, looking through Triton's wrappers: under the interpreter an
    autotuned kernel is Autotuner -> InterpretedFunction -> function, and only the function has a module."""
    for _ in range(8):
        if obj is None:
            return False
        module = getattr(obj, "__module__", "") or ""
        if inspect.isfunction(obj):
            return module.split(".")[0] == "variants"
        obj = getattr(obj, "fn", None)
    return False


def _is_constant(value: Any) -> bool:
    if isinstance(value, bool | int | float | str) and not isinstance(value, type):
        return True
    return isinstance(value, tuple) and all(_is_constant(v) for v in value)


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _collect(roots: list[Any]) -> list[str]:
    parts: list[str] = []
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        obj = stack.pop(0)
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        fn = _unwrap(obj, parts)
        if fn is None:
            continue
        parts.append(f"def {fn.__module__.split('.')[-1]}.{fn.__qualname__}:\n{_normalized_source(fn)}")
        names = _code_names(fn.__code__)
        scopes = [fn.__globals__]
        if fn.__closure__:
            scopes.insert(0, dict(zip(fn.__code__.co_freevars, (c.cell_contents for c in fn.__closure__), strict=True)))
        for name in sorted(names):
            for scope in scopes:
                if name not in scope:
                    continue
                value = scope[name]
                if isinstance(value, types.ModuleType):
                    if value.__name__.split(".")[0] == "variants":
                        stack.extend(getattr(value, n) for n in sorted(names) if hasattr(value, n))
                elif _is_constant(value) and name.isupper():
                    parts.append(f"const {name}={value!r}")
                elif _is_ours(value):
                    stack.append(value)
                break
    return parts


def fingerprint(variant) -> str:
    """A short, stable hash of everything that decides what the variant computes and how fast."""
    roots = [variant.forward, variant.backward, *variant.extra_sources]
    parts = _collect(roots)
    digest = hashlib.sha256("\n\n".join([_FINGERPRINT_SCHEME, *parts]).encode()).hexdigest()
    return f"{_FINGERPRINT_SCHEME}:{digest[:16]}"


def fingerprint_source(variant) -> str:
    """The normalized text the fingerprint hashes; for debugging why a fingerprint moved."""
    return "\n\n".join(_collect([variant.forward, variant.backward, *variant.extra_sources]))


# -- the lock -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LockEntry:
    version: str
    fingerprint: str


def default_lock_path() -> Path:
    env = os.environ.get("KERNELWATCH_LOCK")
    if env:
        return Path(env)
    import variants

    return Path(variants.__path__[0]).parent / LOCK_NAME


def read_lock(path: Path | None = None) -> dict[str, LockEntry]:
    path = path or default_lock_path()
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path} is not valid TOML ({exc}); restore it from git or run `nox -s lock`") from None
    entries = {}
    for key, value in data.get("variant", {}).items():
        try:
            entries[key] = LockEntry(version=str(value["version"]), fingerprint=str(value["fingerprint"]))
        except (KeyError, TypeError):
            raise ValueError(f"{path}: entry [variant.{key!r}] needs version and fingerprint") from None
    return entries


def render_lock(variants) -> str:
    lines = [
        "# Kernel versions and source fingerprints. Written by `nox -s lock`; do not edit by hand.",
        "# A variant whose fingerprint changes must also bump its version= (see docs/versioning.md).",
        "",
    ]
    for v in sorted(variants, key=lambda v: v.key):
        lines += [f'[variant."{v.key}"]', f'version = "{v.version}"', f'fingerprint = "{v.fingerprint}"', ""]
    return "\n".join(lines)


def write_lock(variants, path: Path | None = None) -> Path:
    """Write the lock atomically: a crash half-way never leaves a truncated lock behind."""
    path = path or default_lock_path()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_lock(variants))
    os.replace(tmp, path)
    return path


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def check(variant, lock: dict[str, LockEntry]) -> str | None:
    """Why the lock disagrees with the code for this variant, with what to do; None if they agree."""
    where = variant.source_file or variant.module
    entry = lock.get(variant.key)
    if entry is None:
        return f"{variant.key} v{variant.version} is not in {LOCK_NAME}: run `nox -s lock` and commit the lock"
    current = variant.fingerprint
    if current == entry.fingerprint:
        if variant.version != entry.version:
            return (
                f"{variant.key}: version is {variant.version} but {LOCK_NAME} says {entry.version} for the same "
                f"source; run `nox -s lock` to record it"
            )
        return None
    if variant.version == entry.version:
        major, minor, patch = _version_tuple(variant.version)
        return (
            f"{variant.key}: its kernel source changed (fingerprint {entry.fingerprint} -> {current}) but its "
            f"version is still {variant.version}. Bump version= in {where} (e.g. to {major}.{minor + 1}.0 for a "
            f"new algorithm or tuning, {major}.{minor}.{patch + 1} for a fix), then run `nox -s lock`."
        )
    if _version_tuple(variant.version) < _version_tuple(entry.version):
        return (
            f"{variant.key}: version {variant.version} is lower than the locked {entry.version}; "
            "versions only move forward, so results stay attributable"
        )
    return f"{variant.key}: bumped to {variant.version} but {LOCK_NAME} still has {entry.version}; run `nox -s lock`"
