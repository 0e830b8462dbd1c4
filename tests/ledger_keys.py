"""What a ledger entry is keyed on, and whether an entry still holds (tests/ledger.py is the plugin around it).

A test's entry holds when nothing it depends on has changed since it passed:

- ``env``: the machine (kernels.cache.environment(): backend, Triton, torch, numpy, Python, GPU model, driver, CUDA);
- ``framework``: every file under kernels/ and tests/ (the conftest and the plugins included), pyproject.toml and
  noxfile.py; the op specs, references, tolerances and known failures all live there;
- ``module``: the test's own module file;
- ``variants``: version, fingerprint and contract of each variant the test exercised (recorded at run time through
  kernels/usage.py, plus any Case or Variant among its parameters, plus every variant of an op package its
  module imports from), with the set itself: a variant added to such a package makes the entry stale;
- ``sources``: the files of the ``variants`` modules the test module imports (helpers no fingerprint covers);
- ``catalogue``: for a test that read the registry whole (``registry.all_variants``, or ``import variants``), every
  variant's state and ``variants.lock``: it reruns when any variant changes. The registry-wide checks (the lock is
  current, the support matrix and the docs list every variant) are such tests, so a stale lock or page still fails
  under ``--changed``.

A test that exercised no variant in its own process is keyed on the rest alone, as a test of the framework: a change
to a variant is not its concern. The tests that run pytest or the CLI in a child process on a copy of the checkout
(scaffolding, discovery, versioning, the ledger itself) are such tests: what they check is the framework's
behaviour, and whatever kernels their child runs happen to launch are checked by those kernels' own tests, which
rerun.

The fingerprint covers the ``@triton.jit`` bodies, which is why this exists instead of pytest-testmon: coverage
never sees a kernel body run on a GPU (docs/gpu-runs.md).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
from pathlib import Path

from kernels import usage

PASSING = ("passed", "xfailed")
"""Outcomes an entry is kept for: a pass, and a strict expected failure that failed as expected."""


def digest(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()[:16]


class Keys:
    """The current state of everything an entry is keyed on, computed once per process and cached."""

    def __init__(self, root: Path):
        self.root = root

    @functools.cached_property
    def env(self) -> dict[str, str]:
        from kernels import cache

        return dict(cache.environment())

    @functools.cached_property
    def env_digest(self) -> str:
        return digest(json.dumps(self.env, sort_keys=True))

    @functools.cached_property
    def framework(self) -> str:
        files = [p for d in ("kernels", "tests") for p in (self.root / d).rglob("*") if p.is_file()]
        files += [self.root / name for name in ("pyproject.toml", "noxfile.py")]
        parts = [
            f"{p.relative_to(self.root).as_posix()}:{self.file(p)}"
            for p in sorted(files)
            if "__pycache__" not in p.parts and p.suffix != ".pyc"
        ]
        return digest("\n".join(parts))

    @functools.cache  # noqa: B019  (one Keys per process; the cache lives as long as the run)
    def file(self, path: Path) -> str:
        return digest(path.read_bytes()) if path.is_file() else "absent"

    @functools.cached_property
    def _variants(self) -> dict:
        from kernels import registry

        found = {v.key: v for v in registry.all_variants()}
        usage.take()  # this look-up is the ledger's, not the running test's
        return found

    @functools.cache  # noqa: B019
    def state(self, key: str) -> str | None:
        """Version, fingerprint and contract of a variant; None when there is no such variant (any more)."""
        v = self._variants.get(key)
        if v is None:
            return None
        contract = (
            [str(d) for d in v.dtypes], v.min_cc, v.interpreter, v.interpreter_reason, sorted(v.limits.items()),
            v.deterministic, v.modes, v.backward is not None, v.no_backward, v.backward_reads, v.wants_stash,
        )  # fmt: skip
        return f"{v.version}|{v.fingerprint}|{digest(repr(contract))}"

    @functools.cached_property
    def catalogue(self) -> str:
        from kernels import versioning

        lock = versioning.default_lock_path()
        states = [f"{key}={self.state(key)}" for key in sorted(self._variants)]
        return digest("\n".join([*states, lock.read_text() if lock.is_file() else "no lock"]))

    @functools.cache  # noqa: B019
    def imports(self, module: Path) -> tuple[frozenset[str], tuple[tuple[str, str], ...], bool]:
        """What a test module imports from ``variants``: every variant of each op package named, the files of
        those modules, and whether it imports the package ``variants`` itself (then it may read any of them)."""
        import variants

        top = Path(variants.__path__[0])
        names, whole = set(), False
        for node in ast.walk(ast.parse(module.read_text(), str(module))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    whole |= parts == ["variants"]
                    names.update(parts[1:2] if parts[0] == "variants" else [])
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                parts = node.module.split(".")
                if parts == ["variants"]:
                    names.update(alias.name for alias in node.names)
                elif parts[0] == "variants":
                    names.add(parts[1])
        keys, files = set(), []
        for name in sorted(names):
            if (top / name).is_dir():
                keys.update(k for k, v in self._variants.items() if v.module.startswith(f"variants.{name}."))
                files += sorted(p for p in (top / name).rglob("*.py") if "__pycache__" not in p.parts)
            else:
                files.append(top / f"{name}.py")
        sources = tuple((p.relative_to(top.parent).as_posix(), self.file(p)) for p in files)
        return frozenset(keys), sources, whole

    def static(self, item) -> set[str]:
        """The variants a test names before it runs: its Case and Variant parameters, and its module's imports."""
        from kernels.registry import Variant

        found = set(self.imports(item.path)[0])
        for value in getattr(getattr(item, "callspec", None), "params", {}).values():
            variant = value if isinstance(value, Variant) else getattr(value, "variant", None)
            if isinstance(variant, Variant):
                found.add(variant.key)
        return found

    def entry(self, item, used: set[str], outcome: str, commit: str) -> dict:
        """The entry for a test that ran, exercising the variant keys ``used`` (and maybe usage.CATALOGUE)."""
        _, sources, whole = self.imports(item.path)
        names = (used | self.static(item)) - {usage.CATALOGUE}
        read_all = whole or usage.CATALOGUE in used
        return {
            "outcome": outcome,
            "env": self.env,
            "framework": self.framework,
            "module": self.file(item.path),
            "variants": {key: self.state(key) for key in sorted(names)},
            "sources": dict(sources),
            "catalogue": self.catalogue if read_all else None,
            "commit": commit,
        }

    def stale(self, item, entry: dict, env_digest: str) -> str | None:
        """Why the stored entry no longer holds for ``item`` (a short reason), or None when it does."""
        if entry.get("outcome") not in PASSING:
            return "did not pass last time"
        if env_digest != self.env_digest:
            return "written under another environment"
        if entry.get("framework") != self.framework:
            return "framework changed (kernels/, tests/, pyproject.toml or noxfile.py)"
        if entry.get("module") != self.file(item.path):
            return "test module changed"
        if entry.get("catalogue") not in (None, self.catalogue):
            return "a variant or variants.lock changed (the test depends on the whole catalogue)"
        if entry.get("sources") != dict(self.imports(item.path)[1]):
            return "an imported variants module changed"
        stored = entry.get("variants") or {}
        for key in sorted(set(stored) | self.static(item)):
            if stored.get(key) != self.state(key):
                return f"variant {key} changed"
        return None
