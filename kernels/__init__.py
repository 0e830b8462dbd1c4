"""kernelwatch: versioned Triton kernel variants, checked against float64 references.

    import kernels
    y = kernels.matmul(a, b, variant="splitk")
    kernels.registry.get("matmul", "splitk").fingerprint

Every op spec in kernels/ops/ exposes its entry point here under the op's name (``kernels.softmax``, ...).
"""

# Marks this package as kernelwatch's. PyPI has another distribution whose import name is `kernels`;
# tests/conftest.py and the CLI refuse to run when `import kernels` finds that one instead.
__kernelwatch__ = True

import importlib

import kernels.ops  # noqa: F401  (defines every op spec)
from kernels import registry, spec, versioning
from kernels.errors import KernelInputError, UnsupportedError, VariantImportError


def __getattr__(name: str):
    """``kernels.<op>``: the public entry point defined in kernels/ops/<op>.py."""
    if name in spec.OPS:
        return getattr(importlib.import_module(f"kernels.ops.{name}"), name)
    raise AttributeError(f"module 'kernels' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *spec.OPS])


__all__ = ["KernelInputError", "UnsupportedError", "VariantImportError", "registry", "spec", "versioning"]
