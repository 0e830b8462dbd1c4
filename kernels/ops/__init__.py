"""Op specs, one module per operation. Importing this package defines them all."""

from kernels.ops import add, matmul, softmax  # noqa: F401
