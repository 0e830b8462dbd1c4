"""kernels/tolerance.py: what "close enough" means, and the check that applies it."""

from __future__ import annotations

import pytest
import torch

from kernels import tf32
from kernels.tolerance import RESOLUTION, Tolerance, check_close, override


def test_check_close_takes_atol_plus_rtol_times_the_reference() -> None:
    tol = Tolerance(atol=1e-3, rtol=1e-2)
    ref = torch.tensor([0.0, 10.0], dtype=torch.float64)
    check_close(ref + torch.tensor([1e-3, 0.1009], dtype=torch.float64), ref, tol)
    with pytest.raises(AssertionError, match=r"1 of 2 elements outside atol=0.001, rtol=0.01; worst at \(1,\)"):
        check_close(ref + torch.tensor([0.0, 0.102], dtype=torch.float64), ref, tol)


def test_check_close_refuses_nan_and_a_wrong_infinity() -> None:
    ref = torch.tensor([1.0, float("inf")], dtype=torch.float64)
    with pytest.raises(AssertionError, match="never written"):
        check_close(torch.tensor([float("nan"), float("inf")]), ref, RESOLUTION[torch.float32])
    with pytest.raises(AssertionError, match="outside"):
        check_close(torch.tensor([1.0, float("-inf")]), ref, RESOLUTION[torch.float32])
    check_close(torch.tensor([1.0, float("inf")]), ref, RESOLUTION[torch.float32])


def test_at_scale_grows_only_the_floor_and_says_so() -> None:
    tol = override(atol=1e-2, rtol=1e-2, reason="tf32")
    assert tol.at_scale(0.5) is tol and tol.at_scale(1.0) is tol  # never tighter than the table
    big = tol.at_scale(12.5)
    assert (big.atol, big.rtol) == (pytest.approx(0.125), 1e-2)
    assert big.describe() == "atol=0.125, rtol=0.01 (tf32; atol x 12.5, the RMS of these values)"


def test_a_tf32_sum_of_large_terms_needs_the_scaled_floor() -> None:
    # conv2d's dweight at its GPU shape 8x64x56x56 sums N*P*Q = 25088 products of x ~ N(0, 1) and a grad_out
    # scaled by (N*P*Q) ** -0.25: RMS 12.5. Tensor cores truncate fp32 operands to tf32 (10 mantissa bits), which
    # leaves such a sum an error of about 0.01, the fixed floor itself. Modelled here on a sum of fewer terms
    # with the same RMS, on the CPU, in float64.
    g = torch.Generator().manual_seed(0)
    n, rows = 4096, 4096
    x = torch.randn(rows, n, generator=g, dtype=torch.float64)
    dy = torch.randn(n, generator=g, dtype=torch.float64) * (12.5 / n**0.5)

    def truncated(t):
        return torch.from_numpy(tf32.truncate(t.float().numpy())).double()

    want, got = x @ dy, truncated(x) @ truncated(dy)
    tol = override(atol=1e-2, rtol=1e-2, reason="tf32")
    assert (got - want).std() > 0.5 * tol.atol  # the floor is within two sigma of the error: a coin toss per run
    check_close(got, want, tol.at_scale(want.pow(2).mean().sqrt().item()))
