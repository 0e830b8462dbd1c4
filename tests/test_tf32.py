"""kernels/tf32.py: the interpreter's float32 tl.dot, truncated to tf32 as tensor cores read it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import triton
import triton.language as tl

from kernels import backend, tf32

pytestmark = pytest.mark.skipif(
    backend.name() != "interpreter", reason="emulates, under the interpreter, what a GPU's tensor cores do natively"
)


@triton.jit
def _dot_kernel(a_ptr, b_ptr, out_ptr, IEEE: tl.constexpr):
    rows = tl.arange(0, 16)
    a = tl.load(a_ptr + rows[:, None] * 16 + rows[None, :])
    b = tl.load(b_ptr + rows[:, None] * 16 + rows[None, :])
    out = tl.dot(a, b, input_precision="ieee") if IEEE else tl.dot(a, b)
    tl.store(out_ptr + rows[:, None] * 16 + rows[None, :], out)


def _run(a, b, ieee):
    out = torch.full((16, 16), float("nan"))
    _dot_kernel[(1,)](a, b, out, IEEE=ieee)
    return out.double()


def test_truncate_keeps_ten_mantissa_bits() -> None:
    x = np.array([1 + 2**-10 + 2**-11 + 2**-20, -3.0, 2**-126], dtype=np.float32)
    assert tf32.truncate(x).tolist() == [1 + 2**-10, -3.0, 2**-126]


def test_the_suite_runs_tf32_dots_truncated() -> None:
    # tests/conftest.py turns the emulation on for every interpreted test, this one included.
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(16, 16, generator=g), torch.randn(16, 16, generator=g)
    exact = a.double() @ b.double()
    tf32_dot = _run(a, b, ieee=False)
    want = torch.from_numpy(tf32.truncate(a.numpy())).double() @ torch.from_numpy(tf32.truncate(b.numpy())).double()
    torch.testing.assert_close(tf32_dot, want, rtol=1e-6, atol=1e-6)
    assert (tf32_dot - exact).abs().max() > 1e-4  # the truncation shows: tf32's step at 1.0 is 2**-10
    torch.testing.assert_close(_run(a, b, ieee=True), exact, rtol=1e-6, atol=1e-6)  # ieee stays exact
