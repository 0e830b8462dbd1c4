"""float32 ``tl.dot`` under Triton's interpreter, computed as NVIDIA tensor cores compute it.

On a GPU, ``tl.dot`` of two float32 tiles defaults to ``input_precision="tf32"``: the tensor cores keep 10 of the
operands' 23 mantissa bits and ignore the other 13. Triton feeds them the float32 values as they are, without
rounding first, so the operands are in effect truncated (see triton-lang/triton#4574: Triton's tf32 dot is less
accurate than an fp16 one). The interpreter multiplies the float32 values exactly in numpy, so a CPU run never sees
the error that the float32 tolerances exist to absorb. A tolerance that is too tight for tf32 then passes every CPU
run and fails on a GPU, and there only for some seeds.

Inside ``emulate()``, an interpreted float32 x float32 dot with input precision tf32 truncates both operands to
tf32 first. ``"tf32x3"`` and ``"ieee"`` dots stay exact, as on a GPU (tf32x3 keeps nearly full float32 accuracy).
The tests turn it on for every interpreted run (``tests/conftest.py``), beside the bounds check.
"""

from __future__ import annotations

import contextlib

import numpy as np

TF32_DROPPED_BITS = 13
"""float32 has 23 mantissa bits and tf32 10: the low 13 are what the tensor cores ignore."""


def truncate(values: np.ndarray) -> np.ndarray:
    """float32 ``values`` with the low 13 mantissa bits cleared: what a tensor core reads of them."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    return (bits & np.uint32(~((1 << TF32_DROPPED_BITS) - 1) & 0xFFFFFFFF)).view(np.float32)


@contextlib.contextmanager
def emulate():
    """Inside the block, interpreted tf32 dots truncate their float32 operands (nests; restores on exit)."""
    import triton.language as tl
    from triton._C.libtriton import ir
    from triton.runtime import interpreter

    builder_cls = getattr(interpreter, "InterpreterBuilder", None)
    if builder_cls is None or not hasattr(builder_cls, "create_dot"):
        raise RuntimeError("kernels.tf32: this Triton's interpreter has no InterpreterBuilder.create_dot to patch")
    real = builder_cls.create_dot
    if getattr(real, "_kernelwatch_tf32", False):
        yield
        return

    def create_dot(self, a, b, d, input_precision, *rest):
        if input_precision == ir.INPUT_PRECISION.TF32 and a.dtype == tl.float32 and b.dtype == tl.float32:
            a = interpreter.TensorHandle(truncate(a.data), a.dtype)
            b = interpreter.TensorHandle(truncate(b.data), b.dtype)
        return real(self, a, b, d, input_precision, *rest)

    create_dot._kernelwatch_tf32 = True
    builder_cls.create_dot = create_dot
    try:
        yield
    finally:
        builder_cls.create_dot = real
