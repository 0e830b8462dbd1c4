"""What "close enough" means: one table per dtype, and per-op overrides that must say why.

A result passes when, element by element, ``|out - ref| <= atol + rtol * |ref|`` with ``ref`` computed in
float64. NaN never passes. The table is keyed by the dtype of the *result*: an fp8 matmul that writes bf16 is
held to the bf16 row, because its operands are exact in the float64 reference and only the accumulation and
the final rounding can differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float
    reason: str = ""

    def at_scale(self, scale: float) -> Tolerance:
        """This tolerance for values of RMS ``scale`` > 1: the atol floor times ``scale``. The table and the
        overrides are for O(1) values. A gradient cannot always be O(1): one grad_out scale serves every input's
        gradient, and they sum different numbers of products (conv2d's dweight sums N*P*Q, its dx K*R*S). The error
        of an element that cancels to near 0 grows with the size of its terms, so the floor grows with them."""
        if scale <= 1.0:
            return self
        return Tolerance(
            atol=self.atol * scale,
            rtol=self.rtol,
            reason=f"{self.reason + '; ' if self.reason else ''}atol x {scale:.3g}, the RMS of these values",
        )

    def describe(self) -> str:
        text = f"atol={self.atol:g}, rtol={self.rtol:g}"
        return f"{text} ({self.reason})" if self.reason else text


# One rounding of the result to the dtype, plus fp32 accumulation, fits inside these. They match the
# defaults of torch.testing for the same dtypes, so a kernel held to them is as good as an eager op.
RESOLUTION: dict[torch.dtype, Tolerance] = {
    torch.float64: Tolerance(atol=1e-12, rtol=1e-10),
    torch.float32: Tolerance(atol=1e-5, rtol=1.3e-6),
    torch.float16: Tolerance(atol=1e-5, rtol=1e-3),
    torch.bfloat16: Tolerance(atol=1e-5, rtol=1.6e-2),
    # One e4m3 step is 2**-3 relative; e5m2 has one mantissa bit less.
    torch.float8_e4m3fn: Tolerance(atol=2**-9, rtol=2**-3),
    torch.float8_e5m2: Tolerance(atol=2**-16, rtol=2**-2),
}


def override(atol: float, rtol: float, *, reason: str) -> Tolerance:
    """A per-op tolerance. The reason is mandatory and is printed next to every failure that uses it."""
    if not reason.strip():
        raise ValueError("a tolerance override must give its reason")
    return Tolerance(atol=atol, rtol=rtol, reason=reason)


def tensor_core_sums(summed: str) -> dict[torch.dtype, Tolerance]:
    """The overrides of an op whose outputs are fp32 sums of tl.dot products, O(1) by its input factory: tf32 for
    float32 operands, and for fp16/bf16 an absolute floor for elements that cancel to near 0. ``summed`` says what
    each output element sums (e.g. "K products"), for the reason printed with a failure."""
    return {
        torch.float32: override(
            atol=1e-2,
            rtol=1e-2,
            reason="tl.dot rounds float32 operands to tf32 (10-bit mantissa) on tensor cores by default",
        ),
        **{
            dtype: override(
                atol=5e-4,
                rtol=RESOLUTION[dtype].rtol,
                reason=f"outputs are O(1); an element that cancels to near 0 keeps the fp32 accumulation error of "
                f"{summed}, which tensor cores leave above 1e-5 (cuBLAS too); 5e-4 is one fp16 ulp at 1.0",
            )
            for dtype in (torch.float16, torch.bfloat16)
        },
    }


def lookup(dtype: torch.dtype, overrides: dict[torch.dtype, Tolerance] | None = None) -> Tolerance:
    if overrides and dtype in overrides:
        return overrides[dtype]
    try:
        return RESOLUTION[dtype]
    except KeyError:
        raise KeyError(f"no tolerance for {dtype}: add it to kernels.tolerance.RESOLUTION") from None


def check_close(out: torch.Tensor, ref: torch.Tensor, tol: Tolerance, *, what: str = "result") -> None:
    """Raise AssertionError, with the worst element, unless ``out`` matches ``ref`` within ``tol``."""
    if out.shape != ref.shape:
        raise AssertionError(f"{what}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}")
    got = out.detach().to(device=ref.device, dtype=torch.float64)
    want = ref.detach().to(torch.float64)
    bad_nan = torch.isnan(got) & ~torch.isnan(want)
    if bad_nan.any():
        n = int(bad_nan.sum())
        first = tuple(int(i) for i in bad_nan.nonzero()[0])
        raise AssertionError(
            f"{what}: {n} of {got.numel()} elements are NaN (first at {first}); "
            "outputs are poisoned with NaN before each run, so these were never written or overflowed"
        )
    err = (got - want).abs()
    allowed = tol.atol + tol.rtol * want.abs()
    bad = err > allowed
    # Infinities that match exactly are fine; inf - inf is NaN, which `bad` would miss.
    bad |= torch.isinf(got) & (got != want)
    if bad.any():
        idx = int(torch.argmax(torch.where(bad, err - allowed, torch.zeros_like(err))))
        where = tuple(int(i) for i in torch.unravel_index(torch.tensor(idx), got.shape))
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {got.numel()} elements outside {tol.describe()}; "
            f"worst at {where}: got {got.flatten()[idx].item():.8g}, want {want.flatten()[idx].item():.8g}, "
            f"|err|={err.flatten()[idx].item():.3g} > {allowed.flatten()[idx].item():.3g}"
        )


def max_errors(out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Max absolute and max relative error against the reference, for reports and the asv error series."""
    got = out.detach().to(device=ref.device, dtype=torch.float64)
    want = ref.detach().to(torch.float64)
    err = (got - want).abs()
    return {
        "max_abs": float(err.max()) if err.numel() else 0.0,
        "max_rel": float((err / want.abs().clamp_min(1e-30)).max()) if err.numel() else 0.0,
        "rel_l2": float(err.norm() / want.norm().clamp_min(1e-300)) if err.numel() else 0.0,
    }
