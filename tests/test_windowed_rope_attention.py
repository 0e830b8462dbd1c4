"""windowed_rope_attention beyond the generated cases: the limits of the window (wider than the sequence: the first
encoding alone; 1: the second encoding everywhere off the diagonal), the blend against an independent construction,
an odd sequence with a transition as wide as the window, strided and permuted inputs, a custom scale, gradients for
a subset of the inputs, an empty sequence, and the inputs it refuses."""

from __future__ import annotations

import math

import pytest
import torch

import kernels
from kernels import backend, dispatch, memory, registry, spec
from kernels.errors import KernelInputError, UnsupportedError
from kernels.ops.windowed_rope_attention import NAMES, reference
from kernels.tolerance import check_close

DEV = backend.device()
SPEC = spec.get("windowed_rope_attention")
registry.discover()
VARIANTS = [v.name for v in registry.variants_of("windowed_rope_attention")]  # every variant, a new one included
# fp16: exact under the interpreter and on GPU alike (bf16 tl.dot is a declared interpreter gap).
DTYPE = torch.float16


def _inputs(B, H, S, D, window, *, transition=0, seed=0, dtype=DTYPE):
    inputs = SPEC.make_inputs((B, H, S, D, window), dtype, DEV, torch.Generator().manual_seed(seed), "default")
    inputs["transition"] = transition
    return inputs


def _run(inputs, variant, grads=NAMES, *, seed=1):
    """Forward into a NaN-poisoned output, then backward for ``grads``: (inputs with .grad set, output, dy)."""
    inputs = dict(inputs)
    for name in grads:
        inputs[name] = inputs[name].detach().requires_grad_()
    with memory.poisoned():
        out = dispatch.allocate_poisoned("windowed_rope_attention", inputs)
        y = kernels.windowed_rope_attention(**inputs, variant=variant, out=out)
    dy = spec.randn(tuple(y.shape), y.dtype, DEV, torch.Generator().manual_seed(seed))
    if grads:
        with memory.poisoned():
            y.backward(dy)
    return inputs, y, dy


def _check_against(inputs, variant, model, grads=NAMES):
    """The variant's output and gradients against ``model`` (a float64 function of the same inputs) and autograd."""
    got, y, dy = _run(inputs, variant, grads)
    ref_in = {n: (v.detach().double().requires_grad_(n in grads) if torch.is_tensor(v) else v) for n, v in got.items()}
    ref = model(**ref_in)
    tol = SPEC.tolerance(y.dtype)
    check_close(y, ref, tol, what=f"{variant} o")
    if not grads:
        return
    ref.backward(dy.double())
    for name in NAMES:
        if name in grads:
            # An input the model never reads has a zero gradient.
            want = ref_in[name].grad if ref_in[name].grad is not None else torch.zeros_like(ref_in[name])
            check_close(got[name].grad, want, tol, what=f"{variant} d{name}")
        else:
            assert got[name].grad is None


def _attention(q, k, v, scores_from=None):
    """Plain causal softmax attention in float64, with the scores optionally replaced by ``scores_from``."""
    s = scores_from if scores_from is not None else (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    S = q.shape[-2]
    causal = torch.ones(S, S, dtype=torch.bool, device=q.device).tril()
    return torch.softmax(s.masked_fill(~causal, float("-inf")), dim=-1) @ v


@pytest.mark.parametrize("variant", VARIANTS)
def test_window_wider_than_the_sequence_is_the_first_encoding_alone(variant) -> None:
    inputs = _inputs(1, 2, 33, 16, window=34, seed=2)
    _check_against(inputs, variant, lambda q1, k1, q2, k2, v, **_: _attention(q1, k1, v))
    got, _, _ = _run(inputs, variant)
    # The second encoding never reaches a score: its gradients are exactly zero, not merely small.
    assert torch.count_nonzero(got["q2"].grad) == 0 and torch.count_nonzero(got["k2"].grad) == 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_window_one_is_the_second_encoding_off_the_diagonal(variant) -> None:
    def model(q1, k1, q2, k2, v, **_):
        scale = q1.shape[-1] ** -0.5
        s1, s2 = (q1 @ k1.transpose(-1, -2)) * scale, (q2 @ k2.transpose(-1, -2)) * scale
        diagonal = torch.eye(q1.shape[-2], dtype=torch.bool, device=q1.device)
        return _attention(q1, k1, v, scores_from=torch.where(diagonal, s1, s2))

    _check_against(_inputs(2, 1, 40, 32, window=1, seed=3), variant, model)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(("window", "transition"), [(12, 5), (9, 9), (1, 1)])
def test_transition_blends_linearly(variant, window, transition) -> None:
    def model(q1, k1, q2, k2, v, **_):
        S, scale = q1.shape[-2], q1.shape[-1] ** -0.5
        s1, s2 = (q1 @ k1.transpose(-1, -2)) * scale, (q2 @ k2.transpose(-1, -2)) * scale
        # Built element by element from the docstring's definition, independently of the spec's reference.
        alpha = torch.zeros(S, S, dtype=torch.float64)
        for i in range(S):
            for j in range(i + 1):
                alpha[i, j] = min(max((i - j - (window - transition)) / transition, 0.0), 1.0)
        alpha = alpha.to(q1.device)
        return _attention(q1, k1, v, scores_from=(1 - alpha) * s1 + alpha * s2)

    _check_against(_inputs(1, 2, 37, 16, window=window, transition=transition, seed=4), variant, model)


@pytest.mark.parametrize("variant", VARIANTS)
def test_blend_differs_from_the_hard_switch(variant) -> None:
    # The transition must reach the kernels: the blended result is not the hard switch's.
    hard = _inputs(1, 1, 30, 16, window=10, seed=5)
    blended = hard | {"transition": 6}
    y_hard = kernels.windowed_rope_attention(**hard, variant=variant)
    y_blend = kernels.windowed_rope_attention(**blended, variant=variant)
    assert (y_hard.double() - y_blend.double()).abs().max() > 1e-2


@pytest.mark.parametrize("variant", VARIANTS)
def test_odd_sequence_with_blend(variant) -> None:
    _check_against(_inputs(1, 3, 63, 24, window=20, transition=7, seed=6), variant, reference)


@pytest.mark.parametrize("variant", VARIANTS)
def test_non_contiguous_inputs(variant) -> None:
    B, H, S, D = 2, 3, 29, 16
    base = _inputs(B, H, S, D, window=7, transition=3, seed=7)
    inputs = dict(base)
    # [B, S, H, D] storage seen as [B, H, S, D], as a fused QKV projection leaves it; a head dim with stride 2;
    # a column-major last two dims.
    inputs["q1"] = base["q1"].transpose(1, 2).contiguous().transpose(1, 2)
    inputs["k1"] = base["k1"].transpose(1, 2).contiguous().transpose(1, 2)
    inputs["q2"] = torch.stack([base["q2"], base["q2"]], dim=-1).flatten(-2)[..., ::2]
    inputs["k2"] = base["k2"].transpose(-1, -2).contiguous().transpose(-1, -2)
    inputs["v"] = base["v"].transpose(1, 2).contiguous().transpose(1, 2)
    assert not any(inputs[n].is_contiguous() for n in NAMES)
    _check_against(inputs, variant, reference)


@pytest.mark.parametrize("variant", VARIANTS)
def test_custom_scale_and_float32(variant) -> None:
    inputs = _inputs(1, 2, 21, 16, window=6, transition=2, seed=8, dtype=torch.float32) | {"scale": 0.3}
    _check_against(inputs, variant, reference)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradient_for_a_subset(variant) -> None:
    # Frozen keys and values: only the queries train (a probe on top of a frozen cache).
    _check_against(_inputs(1, 1, 25, 16, window=4, seed=9), variant, reference, grads=("q1", "q2"))


def test_head_dim_not_a_power_of_two() -> None:
    _check_against(_inputs(1, 1, 19, 20, window=5, seed=10), "fused", reference)


def test_empty_sequence() -> None:
    inputs = _inputs(2, 2, 0, 16, window=3)
    y = kernels.windowed_rope_attention(**inputs)
    assert y.shape == (2, 2, 0, 16)


# -- bad input -----------------------------------------------------------------------------------------------------
def _bad(**changes):
    inputs = _inputs(1, 2, 5, 16, window=3)
    inputs.update(changes)
    return inputs


def _randn(*shape, dtype=DTYPE):
    return torch.randn(shape, dtype=dtype, device=DEV)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"k1": _randn(1, 2, 5, 8), "k2": _randn(1, 2, 5, 8)}, r"head dims differ \(q1 16, k1 8, q2 16, k2 8, v 16\)"),
        ({"v": _randn(1, 2, 5, 32)}, r"head dims differ \(q1 16, k1 16, q2 16, k2 16, v 32\)"),
        ({"q2": _randn(1, 2, 6, 16)}, r"q1 \[1, 2, 5, 16\] and q2 \[1, 2, 6, 16\] must have the same shape"),
        ({"k2": _randn(1, 1, 5, 16)}, r"k1 \[1, 2, 5, 16\] and k2 \[1, 1, 5, 16\] must have the same shape"),
        (
            {"k1": _randn(1, 2, 7, 16), "k2": _randn(1, 2, 7, 16)},
            r"q1 is \[1, 2, 5, 16\] and k1 is \[1, 2, 7, 16\]: batch, heads and seq must match",
        ),
        ({"v": _randn(2, 2, 5, 16)}, r"q1 is \[1, 2, 5, 16\] and v is \[2, 2, 5, 16\]: batch, heads and seq"),
    ],
    ids=["head-dim-k", "head-dim-v", "q1-q2", "k1-k2", "seq-k", "batch-v"],
)
def test_mismatched_shapes(changes, message) -> None:
    with pytest.raises(KernelInputError, match=message):
        kernels.windowed_rope_attention(**_bad(**changes))


@pytest.mark.parametrize("name", NAMES)
def test_wrong_rank(name) -> None:
    with pytest.raises(KernelInputError, match=r"must all be 4-D \[batch, heads, seq, head_dim\]"):
        kernels.windowed_rope_attention(**_bad(**{name: _randn(2, 5, 16)}))


@pytest.mark.parametrize("window", [0, -3, 2.5, True, None])
def test_window_must_be_a_positive_integer(window) -> None:
    with pytest.raises(KernelInputError, match=r"window must be an integer >= 1, got"):
        kernels.windowed_rope_attention(**_bad(window=window))


@pytest.mark.parametrize("transition", [-1, 4, 1.5, True])
def test_transition_within_the_window(transition) -> None:
    with pytest.raises(KernelInputError, match=r"transition must be an integer in \[0, window=3\], got"):
        kernels.windowed_rope_attention(**_bad(transition=transition))


@pytest.mark.parametrize("name", NAMES)
def test_mixed_dtypes(name) -> None:
    inputs = _bad()
    inputs[name] = inputs[name].float()
    other = name if name != "q1" else "k1"
    with pytest.raises(KernelInputError, match=rf"q1 is torch\.float(16|32) but {other} is torch\.float(16|32)"):
        kernels.windowed_rope_attention(**inputs)


def test_integer_operands() -> None:
    ints = {n: (t.to(torch.int32) if torch.is_tensor(t) else t) for n, t in _bad().items()}
    with pytest.raises(KernelInputError, match="q1 must be a floating-point tensor"):
        kernels.windowed_rope_attention(**ints)


@pytest.mark.parametrize("scale", [True, float("nan"), "0.1", torch.tensor(0.1, device=DEV)])
def test_scale_is_a_finite_number(scale) -> None:
    with pytest.raises(KernelInputError, match="scale must be None or a finite real number"):
        kernels.windowed_rope_attention(**_bad(scale=scale))


def test_head_dim_past_the_fused_tile() -> None:
    inputs = _inputs(1, 1, 3, 136, window=2)
    with pytest.raises(UnsupportedError, match=r"windowed_rope_attention.fused v\S+ supports 1 <= D <= 128, got D=136"):
        kernels.windowed_rope_attention(**inputs, variant="fused")
