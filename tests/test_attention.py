"""attention beyond the generated cases: grouped-query heads, causal masks over odd and unequal lengths, the default
and an explicit scale, strided [B, S, H, D] inputs, the memory flash saves over naive (GPU), flash_hopper's
fallbacks (layouts TMA cannot address, a gradient among them; a non-positive scale) and its backward's hand-given
configs, the fp8 variant, and the inputs it refuses."""

from __future__ import annotations

import pytest
import torch

import kernels
from kernels import backend, dispatch, memory, spec
from kernels.errors import KernelInputError, UnsupportedError
from kernels.ops.attention import CAUSAL, NO_MASK, reference
from kernels.tolerance import check_close

DEV = backend.device()
SPEC = spec.get("attention")
_HOPPER_GAP = kernels.registry.get("attention", "flash_hopper").unsupported_backend()
# flash_hopper takes fp16 and bf16 only, so it is not in the float32 test.
FLOAT_VARIANTS = ["naive", "flash"]
VARIANTS = [
    *FLOAT_VARIANTS,
    pytest.param("flash_hopper", marks=pytest.mark.skipif(bool(_HOPPER_GAP), reason=str(_HOPPER_GAP))),
]
# fp16: exact under the interpreter and on GPU alike (bf16 tl.dot is a declared interpreter gap).
DTYPE = torch.float16


def _inputs(B, Hq, Hkv, Sq, Sk, D, mask=NO_MASK, *, seed=0, dtype=DTYPE):
    shape = (B, Hq, Hkv, Sq, Sk, D, mask)
    return SPEC.make_inputs(shape, dtype, DEV, torch.Generator().manual_seed(seed), "default")


def _check(inputs, variant, *, seed=1):
    """Forward into a NaN-poisoned output, then the backward for q, k and v, both against float64 autograd."""
    inputs = dict(inputs)
    for name in ("q", "k", "v"):
        inputs[name] = inputs[name].detach().requires_grad_()
    with memory.poisoned():
        out = kernels.attention(**inputs, variant=variant, out=dispatch.allocate_poisoned("attention", inputs))
    ref_in = {n: (t.detach().double().requires_grad_() if torch.is_tensor(t) else t) for n, t in inputs.items()}
    ref = reference(**ref_in)
    tol = SPEC.tolerance(out.dtype)
    check_close(out, ref, tol, what=f"{variant} out")
    grad = spec.randn(tuple(out.shape), out.dtype, DEV, torch.Generator().manual_seed(seed))
    with memory.poisoned():
        out.backward(grad)
    ref.backward(grad.double())
    for name in ("q", "k", "v"):
        check_close(inputs[name].grad, ref_in[name].grad, tol, what=f"{variant} d{name}")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("mask", [NO_MASK, CAUSAL], ids=["full", "causal"])
def test_attention_grouped_query_heads(variant, mask) -> None:
    # Four query heads on one key/value head: the dK and dV of that head sum all four.
    _check(_inputs(1, 4, 1, 19, 23, 16, mask, seed=2), variant)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(("sq", "sk"), [(63, 63), (5, 37), (37, 5)], ids=["63", "short-q", "short-k"])
def test_attention_causal_odd_lengths(variant, sq, sk) -> None:
    # Top-left alignment: query i sees keys 0..i, so with Sq > Sk the last queries see every key.
    _check(_inputs(1, 1, 1, sq, sk, 16, CAUSAL, seed=sq + sk), variant)


@pytest.mark.parametrize("variant", VARIANTS)
def test_attention_default_and_explicit_scale(variant) -> None:
    inputs = _inputs(1, 2, 2, 9, 11, 32, seed=4)
    inputs["scale"] = None
    _check(inputs, variant)
    inputs["scale"] = 0.3
    _check(inputs, variant)
    # The default really is 1/sqrt(head_dim): the two scales give different results.
    a = kernels.attention(inputs["q"], inputs["k"], inputs["v"], variant=variant)
    b = kernels.attention(inputs["q"], inputs["k"], inputs["v"], scale=32**-0.5, variant=variant)
    c = kernels.attention(inputs["q"], inputs["k"], inputs["v"], scale=0.3, variant=variant)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("variant", VARIANTS)
def test_attention_strided_bshd_inputs(variant) -> None:
    # The [batch, seq, heads, head_dim] layout most models keep, read through .transpose(1, 2) without a copy.
    B, Hq, Hkv, Sq, Sk, D = 2, 4, 2, 13, 21, 16
    gen = torch.Generator().manual_seed(5)
    q = spec.randn((B, Sq, Hq, D), DTYPE, DEV, gen).transpose(1, 2)
    k = spec.randn((B, Sk, Hkv, D), DTYPE, DEV, gen).transpose(1, 2)
    v = spec.randn((B, Sk, 2 * Hkv, D), DTYPE, DEV, gen)[:, :, ::2].transpose(1, 2)
    assert not any(t.is_contiguous() for t in (q, k, v))
    _check({"q": q, "k": k, "v": v, "causal": True, "scale": 0.4}, variant)


@pytest.mark.parametrize("variant", FLOAT_VARIANTS)
def test_attention_float32(variant) -> None:
    _check(_inputs(1, 2, 1, 7, 17, 16, CAUSAL, seed=6, dtype=torch.float32), variant)


@pytest.mark.skipif(DEV.type != "cuda", reason="needs CUDA to measure peak memory")
def test_attention_flash_memory_is_linear_in_seq_and_naive_quadratic() -> None:
    def extra_bytes(variant, seq):
        # A training forward: flash keeps the logsumexp ([B * H, seq] fp32) for its backward, naive keeps P.
        inputs = _inputs(1, 8, 8, seq, seq, 64, seed=7, dtype=torch.bfloat16)
        for name in ("q", "k", "v"):
            inputs[name].requires_grad_()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = kernels.attention(**inputs, variant=variant)
        torch.cuda.synchronize()
        del out
        return torch.cuda.max_memory_allocated() - base

    short, long = 1024, 4096
    flash = extra_bytes("flash", short), extra_bytes("flash", long)
    naive = extra_bytes("naive", short), extra_bytes("naive", long)
    # 4x the sequence: flash's extra memory (the output and the logsumexp) grows 4x, naive's score matrix 16x.
    assert flash[1] <= 4.5 * flash[0], flash
    assert naive[1] >= 12 * naive[0], naive
    # At seq 4096 naive's [8, 4096, 4096] fp32 scores alone are 512 MiB; flash's output is 4 MiB.
    assert naive[1] >= 8 * 4096 * 4096 * 4 > 50 * flash[1], (flash, naive)


# -- flash_hopper's fallbacks ---------------------------------------------------------------------------------
@pytest.mark.skipif(bool(_HOPPER_GAP), reason=str(_HOPPER_GAP))
def test_attention_flash_hopper_descriptor_views() -> None:
    from variants.attention._flash_tma import _descriptor

    gen = torch.Generator().manual_seed(11)
    dense = spec.randn((2, 3, 5, 16), DTYPE, DEV, gen)
    desc = _descriptor(dense, 16)
    assert desc is not None and list(desc.shape) == [6, 5, 16] and desc.block_shape == [1, 16, 16]
    # [B, S, H, D] read through .transpose(1, 2): batch and head do not merge into one dimension.
    assert _descriptor(spec.randn((2, 5, 3, 16), DTYPE, DEV, gen).transpose(1, 2), 16) is None
    # A base 2 bytes past a 16-byte boundary, and a head_dim sliced out of a wider one (row stride 34 bytes).
    assert _descriptor(spec.randn((2 * 3 * 5 * 16 + 1,), DTYPE, DEV, gen)[1:].view(2, 3, 5, 16), 16) is None
    assert _descriptor(spec.randn((2, 3, 5, 17), DTYPE, DEV, gen)[..., :16], 16) is None
    # Size-1 dimensions with strides torch leaves arbitrary still take a descriptor.
    odd = torch.as_strided(dense, (1, 1, 1, 16), (7, 7, 7, 1))
    assert _descriptor(odd, 16) is not None


@pytest.mark.skipif(bool(_HOPPER_GAP), reason=str(_HOPPER_GAP))
def test_attention_flash_hopper_misaligned_out_and_nonpositive_scale() -> None:
    inputs = _inputs(1, 4, 2, 21, 13, 32, CAUSAL, seed=12)
    ref = reference(**spec.upcast(inputs))
    tol = SPEC.tolerance(DTYPE)
    # An out that starts 2 bytes past a 16-byte boundary: written through an aligned buffer and copied back.
    backing = torch.full((ref.numel() + 1,), float("nan"), dtype=DTYPE, device=DEV)
    out = backing[1:].view(ref.shape)
    result = kernels.attention(**inputs, variant="flash_hopper", out=out)
    assert result.data_ptr() == out.data_ptr() and backing[0].isnan()
    check_close(out, ref, tol, what="flash_hopper into a misaligned out")
    # The folded-scale softmax needs scale > 0: a negative or zero scale runs the pointer kernel forward; the TMA
    # backward takes no row maximum and runs as for any other scale.
    for scale in (-0.3, 0.0):
        _check(inputs | {"scale": scale}, "flash_hopper")


@pytest.mark.skipif(bool(_HOPPER_GAP), reason=str(_HOPPER_GAP))
def test_attention_flash_hopper_backward_grad_layouts_and_hand_configs() -> None:
    from variants.attention import _flash_tma_bwd

    B, Hq, Hkv, Sq, Sk, D = 1, 4, 2, 21, 13, 32
    inputs = _inputs(B, Hq, Hkv, Sq, Sk, D, CAUSAL, seed=13)
    ref_in = {n: (t.detach().double().requires_grad_() if torch.is_tensor(t) else t) for n, t in inputs.items()}
    ref = reference(**ref_in)
    tol = SPEC.tolerance(DTYPE)
    gen = torch.Generator().manual_seed(14)
    # Gradients TMA cannot address, so the backward copies them: the transpose of a [B, S, H, D] tensor (batch and
    # head do not merge), and the stride-0 gradient a sum hands back.
    grads = {
        "transposed": spec.randn((B, Sq, Hq, D), DTYPE, DEV, gen).transpose(1, 2),
        "expanded": torch.ones((), dtype=DTYPE, device=DEV).expand(B, Hq, Sq, D),
    }
    for what, grad in grads.items():
        q, k, v = (inputs[n].detach().requires_grad_() for n in ("q", "k", "v"))
        with memory.poisoned():
            out = kernels.attention(q, k, v, causal=True, scale=inputs["scale"], variant="flash_hopper")
            out.backward(grad)
        want = torch.autograd.grad(ref, (ref_in["q"], ref_in["k"], ref_in["v"]), grad.double(), retain_graph=True)
        for name, got, wanted in zip("qkv", (q.grad, k.grad, v.grad), want, strict=True):
            check_close(got, wanted, tol, what=f"flash_hopper d{name}, {what} grad_out")

    # The hand-launch path a GPU sweep takes: each pass with a config given explicitly, any tiles that keep the
    # causal diagonal on whole steps.
    stash = {}
    out = kernels.registry.get("attention", "flash_hopper").forward(
        *(inputs[n] for n in ("q", "k", "v", "causal", "scale")), out=torch.empty_like(inputs["q"]), stash=stash
    )
    grad = grads["transposed"]
    want = torch.autograd.grad(ref, (ref_in["q"], ref_in["k"], ref_in["v"]), grad.double(), retain_graph=True)
    given = inputs | {"stash": stash}
    for dkdv, dq in (((16, 32, 4, 1), (32, 16, 4, 1)), ((32, 32, 4, 2), (16, 16, 4, 2))):
        with memory.poisoned():
            got = _flash_tma_bwd.flash_tma_backward(given, out, grad, dkdv=dkdv, dq=dq)
        for name, wanted in zip("qkv", want, strict=True):
            check_close(got[name], wanted, tol, what=f"flash_hopper d{name} with dkdv {dkdv}, dq {dq}")
    with pytest.raises(ValueError, match="BLOCK_N1 32 must be a multiple of BLOCK_M1 64"):
        _flash_tma_bwd.flash_tma_backward(given, out, grad, dkdv=(64, 32, 4, 1), dq=(32, 16, 4, 1))
    with pytest.raises(ValueError, match="BLOCK_M2 16 must be a multiple of BLOCK_N2 32"):
        _flash_tma_bwd.flash_tma_backward(given, out, grad, dkdv=(16, 32, 4, 1), dq=(16, 32, 4, 1))


# -- fp8 ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mask", [NO_MASK, CAUSAL], ids=["full", "causal"])
def test_attention_fp8_grouped_and_strided(mask) -> None:
    if DEV.type == "cuda" and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 tensor cores need compute capability 8.9")
    inputs = _inputs(1, 4, 2, 33, 70, 64, mask, seed=8, dtype=torch.float8_e4m3fn)
    # q as the transpose of a [B, S, H, D] tensor.
    inputs["q"] = inputs["q"].transpose(1, 2).contiguous().transpose(1, 2)
    with memory.poisoned():
        out = kernels.attention(**inputs, variant="fp8", out=dispatch.allocate_poisoned("attention", inputs))
    assert out.dtype == torch.bfloat16
    check_close(out, reference(**spec.upcast(inputs)), SPEC.tolerance(out.dtype, torch.float8_e4m3fn))


def test_attention_fp8_has_no_backward_and_flash_takes_no_fp8() -> None:
    inputs = _inputs(1, 1, 1, 4, 4, 16, seed=9, dtype=torch.float8_e4m3fn)
    with pytest.raises(UnsupportedError, match=r"does not support dtype torch\.float8_e4m3fn"):
        kernels.attention(**inputs, variant="flash")
    assert "inference-only" in kernels.registry.get("attention", "fp8").no_backward


# -- bad input -----------------------------------------------------------------------------------------------
def _randn(*shape, dtype=DTYPE):
    return torch.randn(shape, dtype=dtype, device=DEV)


def _bad(**changes):
    inputs = _inputs(1, 4, 2, 5, 6, 16)
    inputs.update(changes)
    return inputs


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"k": _randn(1, 2, 6, 32), "v": _randn(1, 2, 6, 32)}, r"head_dim of q \(16\) and of k and v \(32\) must"),
        ({"k": _randn(1, 3, 6, 16), "v": _randn(1, 3, 6, 16)}, r"4 query heads must be a multiple of the 3 key/value"),
        ({"v": _randn(1, 2, 7, 16)}, r"k and v must have the same shape.*k\(1, 2, 6, 16\) and v\(1, 2, 7, 16\)"),
        ({"v": _randn(1, 2, 6, 32)}, r"k and v must have the same shape"),
        ({"q": _randn(4, 5, 16)}, r"q, k and v must all be 4-D .*q\(4, 5, 16\)"),
        ({"k": _randn(2, 6, 16)}, r"must all be 4-D"),
        ({"k": _randn(2, 2, 6, 16), "v": _randn(2, 2, 6, 16)}, r"batch of q \(1\) and of k and v \(2\) must match"),
    ],
    ids=["head-dims", "kv-heads", "kv-seq", "kv-head-dim", "q-3d", "k-3d", "batch"],
)
def test_attention_mismatched_shapes(changes, message) -> None:
    with pytest.raises(KernelInputError, match=message):
        kernels.attention(**_bad(**changes))


@pytest.mark.parametrize("name", ["k", "v"])
def test_attention_mixed_dtypes(name) -> None:
    inputs = _bad()
    inputs[name] = inputs[name].float()
    with pytest.raises(KernelInputError, match=rf"q is torch\.float16 but {name} is torch\.float32"):
        kernels.attention(**inputs)


@pytest.mark.parametrize("head_dim", [8, 48, 256])
def test_attention_unsupported_head_dim(head_dim) -> None:
    t = _randn(1, 1, 4, head_dim)
    with pytest.raises(KernelInputError, match=rf"head_dim {head_dim} is unsupported; supported: \(16, 32, 64, 128\)"):
        kernels.attention(t, t, t)


def test_attention_integer_inputs() -> None:
    t = torch.ones(1, 1, 4, 16, dtype=torch.int32, device=DEV)
    with pytest.raises(KernelInputError, match="q must be a floating-point tensor"):
        kernels.attention(t, t, t)


@pytest.mark.parametrize("scale", [True, float("inf"), float("nan"), "0.1"])
def test_attention_scale_is_none_or_finite(scale) -> None:
    with pytest.raises(KernelInputError, match="scale must be None or a finite real number"):
        kernels.attention(**_bad(scale=scale))


def test_attention_causal_is_a_bool() -> None:
    with pytest.raises(KernelInputError, match="causal must be True or False"):
        kernels.attention(**_bad(causal=1))


def test_attention_fp8_scales() -> None:
    fp8 = _inputs(1, 1, 1, 4, 4, 16, seed=10, dtype=torch.float8_e4m3fn)
    with pytest.raises(KernelInputError, match="need all of q_scale, k_scale and v_scale"):
        kernels.attention(fp8["q"], fp8["k"], fp8["v"], q_scale=fp8["q_scale"])
    with pytest.raises(KernelInputError, match="only fp8 inputs take scales"):
        kernels.attention(**_bad(q_scale=fp8["q_scale"], k_scale=fp8["k_scale"], v_scale=fp8["v_scale"]))
    with pytest.raises(KernelInputError, match=r"v_scale must be a float32 tensor of shape \[1\]"):
        kernels.attention(**(fp8 | {"v_scale": torch.ones(2, device=DEV)}))


def test_attention_zero_length_gives_empty_or_zero_results() -> None:
    empty_q = _inputs(1, 2, 2, 0, 5, 16)
    assert kernels.attention(**empty_q).shape == (1, 2, 0, 16)
