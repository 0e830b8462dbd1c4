"""kernelwatch: versioned Triton kernel variants, checked against float64 references.

import kernels
y = kernels.matmul(a, b, variant="splitk")
kernels.registry.get("matmul", "splitk").fingerprint
"""

# Marks this package as kernelwatch's. PyPI has another distribution whose import name is `kernels`;
# tests/conftest.py and the CLI refuse to run when `import kernels` finds that one instead.
__kernelwatch__ = True

from kernels import registry, versioning
from kernels.errors import KernelInputError, UnsupportedError, VariantImportError
from kernels.ops.add import add
from kernels.ops.matmul import matmul
from kernels.ops.softmax import softmax

__all__ = [
    "KernelInputError",
    "UnsupportedError",
    "VariantImportError",
    "add",
    "matmul",
    "registry",
    "softmax",
    "versioning",
]
