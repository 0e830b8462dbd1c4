"""rope beyond the generated cases (contiguous q and k, Hugging Face rotary tables): strided q and k from a fused
qkv projection, strided and float32 cos/sin, tables whose halves differ (which tells the true gradient from a
plain rotation by -sin), and the inputs rope refuses."""

from __future__ import annotations

import pytest
import torch

import kernels
from kernels import backend, dispatch, memory, registry, spec
from kernels.errors import KernelInputError
from kernels.ops.rope import reference, rotary_tables
from kernels.tolerance import check_close

DEV = backend.device()
SPEC = spec.get("rope")
registry.discover()
VARIANTS = [v.name for v in registry.variants_of("rope")]  # every variant, a new one included


def _randn(*shape, dtype=torch.float32, seed=0):
    return spec.randn(shape, dtype, DEV, torch.Generator().manual_seed(seed))


def _check(q, k, cos, sin, variant, *, seed=1):
    """Forward into NaN-poisoned outputs and backward, both against float64 autograd of the reference."""
    q, k = q.detach().requires_grad_(), k.detach().requires_grad_()
    inputs = {"q": q, "k": k, "cos": cos, "sin": sin}
    with memory.poisoned():
        q_rot, k_rot = kernels.rope(**inputs, variant=variant, out=dispatch.allocate_poisoned("rope", inputs))
    ref_in = {n: t.detach().double().requires_grad_(n in ("q", "k")) for n, t in inputs.items()}
    ref_q, ref_k = reference(**ref_in)
    tol = SPEC.tolerance(q.dtype)
    check_close(q_rot, ref_q, tol, what=f"{variant} q_rot")
    check_close(k_rot, ref_k, tol, what=f"{variant} k_rot")
    dq_rot = _randn(*q_rot.shape, dtype=q.dtype, seed=seed)
    dk_rot = _randn(*k_rot.shape, dtype=k.dtype, seed=seed + 1)
    torch.autograd.backward((q_rot, k_rot), (dq_rot, dk_rot))
    torch.autograd.backward((ref_q, ref_k), (dq_rot.double(), dk_rot.double()))
    check_close(q.grad, ref_in["q"].grad, tol, what=f"{variant} dq")
    check_close(k.grad, ref_in["k"].grad, tol, what=f"{variant} dk")


@pytest.mark.parametrize("variant", VARIANTS)
def test_rope_strided_views_of_a_fused_qkv_projection(variant) -> None:
    B, S, H, D = 2, 9, 3, 16
    # The layout of a fused projection: [B, S, 3, H, D], permuted to three [B, H, S, D] views.
    qkv = _randn(B, S, 3 * H * D).view(B, S, 3, H, D).permute(2, 0, 3, 1, 4)
    q, k = qkv[0], qkv[1]
    assert not q.is_contiguous() and q.stride(-1) == 1
    cos, sin = (t.to(DEV) for t in rotary_tables(S, D))
    _check(q, k, cos, sin, variant)


@pytest.mark.parametrize("variant", VARIANTS)
def test_rope_gqa_views_with_a_strided_head_dim(variant) -> None:
    B, S, Hq, Hk, D = 1, 11, 4, 2, 12
    # A grouped-query projection [B, S, Hq + 2 Hk, D] split by heads, and a head_dim with stride 2 besides.
    qkv = _randn(B, S, Hq + 2 * Hk, 2 * D)[..., ::2].transpose(1, 2)
    q, k = qkv[:, :Hq], qkv[:, Hq : Hq + Hk]
    assert q.stride(-1) == 2
    cos, sin = (t.to(DEV) for t in rotary_tables(S, D))
    _check(q, k, cos, sin, variant)


@pytest.mark.parametrize("variant", VARIANTS)
def test_rope_strided_and_broadcast_tables(variant) -> None:
    B, S, H, D = 1, 13, 2, 8
    q, k = _randn(B, H, S, D, seed=2), _randn(B, 1, S, D, seed=3)
    cos_cache, sin_cache = rotary_tables(4 * S, D)
    # A column-major cos (stride along head_dim is S), and a sin that is one row expanded over every position.
    cos = cos_cache[:S].to(DEV).t().contiguous().t()
    sin = sin_cache[S : S + 1].to(DEV).expand(S, D)
    assert cos.stride() == (1, S) and sin.stride() == (0, 1)
    _check(q, k, cos, sin, variant)


@pytest.mark.parametrize("variant", VARIANTS)
def test_rope_tables_with_unequal_halves_get_the_true_gradient(variant) -> None:
    # Random cos and sin: the two halves of each row differ, so the gradient (the transposed map) is not the
    # rotation by -sin, which matches only when the halves are equal.
    B, S, Hq, Hk, D = 2, 5, 2, 1, 8
    q, k = _randn(B, Hq, S, D, seed=4), _randn(B, Hk, S, D, seed=5)
    cos, sin = _randn(S, D, seed=6), _randn(S, D, seed=7)
    _check(q, k, cos, sin, variant)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("variant", VARIANTS)
def test_rope_float32_tables_with_half_precision_q_and_k(variant, dtype) -> None:
    B, S, H, D = 1, 7, 2, 16
    q, k = _randn(B, H, S, D, dtype=dtype, seed=8), _randn(B, H, S, D, dtype=dtype, seed=9)
    cos, sin = (t.to(DEV) for t in rotary_tables(S, D))
    _check(q, k, cos, sin, variant)


# -- refused inputs --------------------------------------------------------------------------------------------
def _inputs(B=1, Hq=2, Hk=1, S=5, D=8):
    cos, sin = (t.to(DEV) for t in rotary_tables(S, D))
    return _randn(B, Hq, S, D), _randn(B, Hk, S, D), cos, sin


def test_rope_refuses_gradients_for_the_tables() -> None:
    q, k, cos, sin = _inputs()
    with pytest.raises(KernelInputError, match="cos requires grad, but rope has no gradient with respect to cos"):
        kernels.rope(q.requires_grad_(), k, cos.requires_grad_(), sin)


def test_rope_refuses_an_odd_head_dim() -> None:
    q, k, cos, sin = _inputs(D=8)
    with pytest.raises(KernelInputError, match="head_dim must be even"):
        kernels.rope(q[..., :7], k[..., :7], cos[:, :7], sin[:, :7])


def test_rope_refuses_mismatched_q_and_k() -> None:
    q, k, cos, sin = _inputs()
    with pytest.raises(KernelInputError, match="batch, seq and head_dim must match"):
        kernels.rope(q, k[:, :, :4], cos, sin)


def test_rope_refuses_tables_of_the_wrong_shape() -> None:
    q, k, cos, sin = _inputs()
    with pytest.raises(KernelInputError, match=r"cos must have shape \[seq, head_dim\] = \[5, 8\], got \[1, 5, 8\]"):
        kernels.rope(q, k, cos[None], sin)


def test_rope_refuses_tables_in_another_half_dtype() -> None:
    q, k, cos, sin = _inputs()
    with pytest.raises(KernelInputError, match=r"sin must be torch\.float16 like q, or float32, got torch\.bfloat16"):
        kernels.rope(q.half(), k.half(), cos.half(), sin.bfloat16())


def test_rope_refuses_three_dimensional_q() -> None:
    q, k, cos, sin = _inputs()
    with pytest.raises(KernelInputError, match=r"q must be 4-D \[batch, heads, seq, head_dim\]"):
        kernels.rope(q[0], k, cos, sin)


def test_rope_zero_length_sequence_gives_empty_results() -> None:
    q, k, cos, sin = _inputs(S=0)
    q_rot, k_rot = kernels.rope(q, k, cos, sin, variant="fused")
    assert q_rot.shape == q.shape and k_rot.shape == k.shape
