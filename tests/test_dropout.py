"""dropout's random choice, which the generated cases take as given (their reference uses the kernel's own mask):
the kept fraction, the seed, backward's mask, the scaling, and agreement of the variants bit for bit."""

from __future__ import annotations

import math

import pytest
import torch

import kernels
from kernels import backend, cases, registry, spec
from kernels.dtypes import FLOATS, short
from kernels.errors import KernelInputError
from kernels.tolerance import check_close

DEV = backend.device()
SPEC = spec.get("dropout")
registry.discover()
VARIANTS = [v.name for v in registry.variants_of("dropout")]  # every variant, a new one included
PROBABILITIES = [0.0, 0.25, 0.9]
# Large enough that the binomial bounds are tight (6 sigma is 2% of N at p = 0.25), small enough for the
# interpreter.
N = 1 << 14
# Tests that check elements one by one need no statistics: a few blocks, the last one partial.
SMALL = 4099
# The generated cases run every dtype; these tests need one full and one half precision.
DTYPES = (torch.float32, torch.bfloat16)


def _generator(salt: str) -> torch.Generator:
    """Fresh each session (from the session seed the test header prints), reproducible with it."""
    return cases.Case(registry.get("dropout", "naive"), torch.float32, (N,)).generator(salt)


def _x(n: int, salt: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return spec.randn((n,), dtype, DEV, _generator(salt))


def _seed(salt: str) -> int:
    return int(torch.randint(0, 2**31 - 1, (1,), generator=_generator(f"seed-{salt}")))


def _within_binomial(count: int, n: int, q: float) -> bool:
    """``count`` is a plausible Binomial(n, q) draw: within 6 standard deviations of the mean, plus 1 for the
    discreteness. For an ideal generator the normal approximation puts a false alarm at P(|Z| > 6) ~= 2e-9 per
    check (about 3e-8 for this whole file); with q = 0 or 1 the bound is 1 and the count must be exact."""
    return abs(count - n * q) <= 6 * math.sqrt(n * q * (1 - q)) + 1


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


@pytest.mark.parametrize("p", PROBABILITIES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_kept_fraction_is_binomial(variant, p) -> None:
    seed = _seed(f"fraction-{variant}-{p}")
    out = kernels.dropout(_x(N, f"fraction-{variant}-{p}"), p=p, seed=seed, variant=variant)
    kept = int((out != 0).sum())
    assert _within_binomial(kept, N, 1 - p), f"kept {kept} of {N} at p={p} (seed {seed}); expected ~{N * (1 - p):.0f}"
    if p == 0:
        assert kept == N


@pytest.mark.parametrize("p", PROBABILITIES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_same_seed_same_mask_other_seed_independent_mask(variant, p) -> None:
    x = _x(N, f"seeds-{variant}-{p}")
    seed = _seed(f"seeds-{variant}-{p}")
    first = kernels.dropout(x, p=p, seed=seed, variant=variant)
    again = kernels.dropout(x, p=p, seed=seed, variant=variant)
    assert torch.equal(_bits(first), _bits(again)), "the same seed gave a different result"
    other = kernels.dropout(x, p=p, seed=seed + 1, variant=variant)
    if p == 0:
        assert torch.equal(_bits(first), _bits(other)), "p=0 must keep everything whatever the seed"
        return
    # Two independent masks disagree on an element with probability 2p(1-p); a seed that shifted, reused or
    # ignored the stream would make them agree (or disagree) far more often.
    disagree = int(((first != 0) != (other != 0)).sum())
    assert disagree > 0, f"seeds {seed} and {seed + 1} drew the same mask"
    assert _within_binomial(disagree, N, 2 * p * (1 - p)), (
        f"seeds {seed} and {seed + 1}: masks differ in {disagree} of {N} elements, "
        f"expected ~{N * 2 * p * (1 - p):.0f} for independent masks"
    )


@pytest.mark.parametrize("dtype", FLOATS, ids=short)
@pytest.mark.parametrize("p", PROBABILITIES)
def test_variants_agree_bit_for_bit(p, dtype) -> None:
    x = _x(SMALL, f"agree-{p}-{short(dtype)}", dtype)
    seed = _seed(f"agree-{p}")
    naive, seeded = (kernels.dropout(x, p=p, seed=seed, variant=v) for v in VARIANTS)
    assert torch.equal(_bits(naive), _bits(seeded)), "naive and seeded differ for the same seed"


@pytest.mark.parametrize("dtype", DTYPES, ids=short)
@pytest.mark.parametrize("p", PROBABILITIES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_scaling(variant, p, dtype) -> None:
    x = _x(SMALL, f"scale-{variant}-{p}-{short(dtype)}", dtype)
    out = kernels.dropout(x, p=p, seed=_seed(f"scale-{variant}-{p}"), variant=variant)
    kept = out != 0
    want = torch.where(kept, x.double() / (1 - p), torch.zeros((), dtype=torch.float64, device=DEV))
    check_close(out, want, SPEC.tolerance(dtype), what=f"dropout.{variant} at p={p}")
    if p == 0:
        assert torch.equal(_bits(out), _bits(x)), "p=0 must return x unchanged"


@pytest.mark.parametrize("dtype", DTYPES, ids=short)
@pytest.mark.parametrize("p", PROBABILITIES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_backward_uses_the_forward_mask(variant, p, dtype) -> None:
    x = _x(SMALL, f"bwd-{variant}-{p}-{short(dtype)}", dtype).requires_grad_()
    out = kernels.dropout(x, p=p, seed=_seed(f"bwd-{variant}-{p}"), variant=variant)
    dy = spec.randn((SMALL,), dtype, DEV, _generator(f"dy-{variant}-{p}-{short(dtype)}"))
    out.backward(dy)
    dropped = out.detach() == 0
    # dy is never 0 and scaling by 1/(1-p) >= 1 cannot underflow, so the gradient is zero exactly where out is.
    assert torch.equal(x.grad == 0, dropped), "the gradient's zeros are not the forward's dropped elements"
    want = torch.where(dropped, torch.zeros((), dtype=torch.float64, device=DEV), dy.double() / (1 - p))
    check_close(x.grad, want, SPEC.tolerance(dtype), what=f"dx of dropout.{variant} at p={p}")


def test_both_variants_take_the_same_gradient() -> None:
    grads = []
    for variant in VARIANTS:
        x = _x(SMALL, "grad-agree").requires_grad_()
        kernels.dropout(x, p=0.5, seed=_seed("grad-agree"), variant=variant).backward(_x(SMALL, "grad-agree-dy"))
        grads.append(x.grad)
    assert torch.equal(_bits(grads[0]), _bits(grads[1]))


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_mask_follows_the_linear_index(variant) -> None:
    x = _x(4 * 33 * 65, "shape")
    seed = _seed("shape")
    flat = kernels.dropout(x, p=0.5, seed=seed, variant=variant)
    shaped = kernels.dropout(x.view(4, 33, 65), p=0.5, seed=seed, variant=variant)
    assert shaped.shape == (4, 33, 65)
    assert torch.equal(_bits(shaped.flatten()), _bits(flat))


@pytest.mark.parametrize("variant", VARIANTS)
def test_seeds_across_the_whole_range(variant) -> None:
    # Small seeds reach the kernel as int32 and large ones as int64: both must key Philox the same way in every
    # variant, and each seed must draw its own mask.
    x = _x(4099, "range")
    seeds = [0, 1, 2**31 - 1, 2**31, 2**32 + 5, 2**63 - 1]
    masks = {}
    for seed in seeds:
        out = kernels.dropout(x, p=0.5, seed=seed, variant=variant)
        other = kernels.dropout(x, p=0.5, seed=seed, variant="seeded" if variant == "naive" else "naive")
        assert torch.equal(_bits(out), _bits(other)), f"the variants disagree at seed {seed}"
        masks[seed] = out != 0
    for a in seeds:
        for b in seeds:
            if a < b:
                assert not torch.equal(masks[a], masks[b]), f"seeds {a} and {b} drew the same mask"


# -- bad input ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [1.0, -0.1, 1.5, float("nan")])
def test_p_outside_the_range_is_refused(p) -> None:
    with pytest.raises(KernelInputError, match=r"dropout: p must be in \[0, 1\)"):
        kernels.dropout(_x(8, "bad"), p=p, seed=0)


@pytest.mark.parametrize("p", [True, "0.5", None])
def test_p_of_the_wrong_type_is_refused(p) -> None:
    with pytest.raises(KernelInputError, match="dropout: p must be a float"):
        kernels.dropout(_x(8, "bad"), p=p, seed=0)


@pytest.mark.parametrize("seed", [-1, 2**63])
def test_seed_outside_the_range_is_refused(seed) -> None:
    with pytest.raises(KernelInputError, match=r"dropout: seed must be in \[0, 2\*\*63 - 1\]"):
        kernels.dropout(_x(8, "bad"), p=0.5, seed=seed)


@pytest.mark.parametrize("seed", [1.5, True, "3"])
def test_seed_of_the_wrong_type_is_refused(seed) -> None:
    with pytest.raises(KernelInputError, match="dropout: seed must be an int"):
        kernels.dropout(_x(8, "bad"), p=0.5, seed=seed)


def test_non_contiguous_x_is_refused() -> None:
    with pytest.raises(KernelInputError, match="dropout: x is not contiguous"):
        kernels.dropout(_x(64, "bad").view(8, 8).t(), p=0.5, seed=0)


def test_integer_x_is_refused() -> None:
    with pytest.raises(KernelInputError, match="floating-point"):
        kernels.dropout(torch.ones(8, dtype=torch.int32, device=DEV), p=0.5, seed=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_zero_size(variant) -> None:
    x = torch.empty(3, 0, device=DEV, requires_grad=True)
    out = kernels.dropout(x, p=0.5, seed=0, variant=variant)
    assert out.shape == (3, 0)
    out.sum().backward()
    assert x.grad is not None and x.grad.shape == (3, 0)
