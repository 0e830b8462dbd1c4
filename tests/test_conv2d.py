"""conv2d beyond the generated cases (square stride/dilation, "same" padding, bias only with ReLU): unequal
(height, width) arguments, bias or ReLU alone, odd strides, gradients for a subset of inputs, out= in
channels-last, the ReLU's side at its kink, the deterministic split wgrad, splitk's choice of SPLIT_K, and the inputs
it refuses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import kernels
from kernels import backend, dispatch, memory, spec
from kernels.errors import KernelInputError, UnsupportedError
from kernels.ops.conv2d import reference
from kernels.tolerance import check_close
from variants.conv2d import splitk
from variants.conv2d._common import geometry, wgrad_splits

DEV = backend.device()
SPEC = spec.get("conv2d")
# fp16: exact under the interpreter and on GPU alike (bf16 tl.dot is a declared interpreter gap).
DTYPE = torch.float16
CL = torch.channels_last


def _inputs(N, C, H, W, K, R, S, *, bias=False, relu=False, cl=True, dtype=DTYPE, seed=0, **conv):
    g = torch.Generator().manual_seed(seed)
    x = spec.randn((N, C, H, W), dtype, DEV, g)
    w = spec.randn((K, C, R, S), dtype, DEV, g, (C * R * S) ** -0.5)
    if cl:
        x, w = x.contiguous(memory_format=CL), w.contiguous(memory_format=CL)
    b = spec.randn((K,), dtype, DEV, g) if bias else None
    return {"x": x, "weight": w, "bias": b, "relu": relu, **conv}


def _check(inputs, variant, grads=("x", "weight", "bias"), *, seed=1):
    """Forward into a NaN-poisoned output, then backward for ``grads``, both against float64 autograd."""
    inputs = dict(inputs)
    grads = [n for n in grads if inputs.get(n) is not None]
    for name in grads:
        inputs[name] = inputs[name].detach().requires_grad_()
    with memory.poisoned():
        y = kernels.conv2d(**inputs, variant=variant, out=dispatch.allocate_poisoned("conv2d", inputs))
    assert y.is_contiguous(memory_format=CL) == inputs["x"].is_contiguous(memory_format=CL)
    ref_in = {
        n: (v.detach().double().requires_grad_(n in grads) if torch.is_tensor(v) else v) for n, v in inputs.items()
    }
    ref = reference(**ref_in, out=y.detach())
    tol = SPEC.tolerance(y.dtype)
    check_close(y, ref, tol, what=f"{variant} y")
    dy = spec.randn(tuple(y.shape), y.dtype, DEV, torch.Generator().manual_seed(seed), 0.3)
    with memory.poisoned():
        y.backward(dy)
    ref.backward(dy.double())
    for name in ("x", "weight", "bias"):
        if name in grads:
            check_close(inputs[name].grad, ref_in[name].grad, tol, what=f"{variant} d{name}")
        elif torch.is_tensor(inputs.get(name)):
            assert inputs[name].grad is None


@pytest.mark.parametrize("variant", ["naive", "implicit_gemm", "fused", "splitk"])
def test_conv2d_unequal_height_and_width_arguments(variant) -> None:
    # stride (2, 1), padding (0, 2), dilation (1, 3) on a 3 x 2 kernel: a mix-up of height and width shows.
    inputs = _inputs(2, 3, 9, 8, 5, 3, 2, stride=(2, 1), padding=(0, 2), dilation=(1, 3), cl=variant != "naive")
    _check(inputs, variant)


@pytest.mark.parametrize("variant", ["naive", "fused", "splitk"])
@pytest.mark.parametrize(("bias", "relu"), [(True, False), (False, True)], ids=["bias-only", "relu-only"])
def test_conv2d_bias_or_relu_alone(variant, bias, relu) -> None:
    _check(_inputs(1, 4, 6, 7, 3, 3, 3, bias=bias, relu=relu, padding=1, seed=2), variant)


@pytest.mark.parametrize("variant", ["implicit_gemm", "fused", "splitk"])
def test_conv2d_stride_three_without_padding_skips_rows(variant) -> None:
    # With stride 3 and a 2 x 2 kernel, some input rows and columns reach no output: their dx is exactly 0.
    _check(_inputs(1, 2, 8, 7, 3, 2, 2, stride=3, seed=3), variant)


@pytest.mark.parametrize("variant", ["naive", "fused"])
def test_conv2d_gradient_for_weight_only(variant) -> None:
    # A network's first layer: its input needs no gradient, so dx is not computed (and none is returned).
    _check(_inputs(1, 3, 5, 6, 4, 3, 3, bias=True, relu=True, padding=1, seed=4), variant, grads=("weight", "bias"))


def test_conv2d_float32_and_strided_input() -> None:
    # A view that is neither NCHW-contiguous nor channels-last: every stride is passed to the kernel.
    base = _inputs(2, 5, 11, 9, 4, 3, 1, dtype=torch.float32, cl=False, padding=(1, 0), seed=5)
    base["x"] = torch.randn(2, 10, 11, 9, generator=torch.Generator().manual_seed(6)).to(DEV)[:, ::2]
    assert not base["x"].is_contiguous() and not base["x"].is_contiguous(memory_format=CL)
    _check(base, "fused")


def test_conv2d_out_in_channels_last() -> None:
    inputs = _inputs(1, 3, 5, 5, 2, 3, 3, padding=1, seed=7)
    out = torch.empty((1, 2, 5, 5), dtype=DTYPE, device=DEV, memory_format=CL)
    y = kernels.conv2d(**inputs, out=out)
    assert y.data_ptr() == out.data_ptr()
    check_close(y, reference(**spec.upcast(inputs)), SPEC.tolerance(DTYPE))
    with pytest.raises(KernelInputError, match=r"out must have the op's output strides \(50, 1, 10, 2\), got"):
        kernels.conv2d(**inputs, out=torch.empty((1, 2, 5, 5), dtype=DTYPE, device=DEV))
    nchw = {**inputs, "x": inputs["x"].contiguous()}
    with pytest.raises(KernelInputError, match="out must be contiguous"):
        kernels.conv2d(**nchw, out=out)


def test_conv2d_relu_side_matches_float64() -> None:
    """The reference takes ReLU's side from the kernel's output (see kernels/ops/conv2d.py); here the side itself
    is checked: zero exactly where the float64 pre-activation is clearly negative, positive where clearly positive."""
    inputs = _inputs(2, 6, 9, 9, 8, 3, 3, bias=True, relu=True, padding=1, dtype=torch.float32, seed=8)
    pre = F.conv2d(inputs["x"].double(), inputs["weight"].double(), inputs["bias"].double(), padding=inputs["padding"])
    for variant in ("naive", "fused"):
        y = kernels.conv2d(**inputs, variant=variant).double()
        clear = pre.abs() > 1e-3
        assert clear.float().mean() > 0.99
        assert torch.equal(y[clear] > 0, pre[clear] > 0), f"{variant}: ReLU on the wrong side"
        assert (y >= 0).all()


def test_conv2d_split_wgrad_is_deterministic() -> None:
    inputs = _inputs(3, 4, 9, 10, 5, 3, 3, bias=True, padding=1, seed=9)
    assert wgrad_splits(geometry(inputs["x"], inputs["weight"], 1, 1, 1))[0] > 1, "the shape must split N*P*Q"
    grads = []
    for _ in range(2):
        leaves = {n: inputs[n].detach().requires_grad_() for n in ("x", "weight", "bias")}
        y = kernels.conv2d(**{**inputs, **leaves}, variant="fused")
        y.backward(torch.ones_like(y))
        grads.append([leaves[n].grad for n in ("weight", "bias")])
    for a, b in zip(*grads, strict=True):
        assert torch.equal(a.view(torch.int16), b.view(torch.int16))


@pytest.mark.skipif(not backend.interpreting(), reason="the interpreter's fixed split; a GPU's depends on its SMs")
def test_conv2d_splitk_cpu_shapes_take_both_paths() -> None:
    # The generated cases test splitk at the op's CPU shapes: the 3x3 ones must cut their 9 reduction steps into a
    # ragged pair of slices (5 + 4), summed by the second kernel, and the 1x1 one (1 step) take the no-split path.
    steps_and_splits = []
    for shape in SPEC.cpu_shapes:
        i = SPEC.make_inputs(shape, DTYPE, DEV, torch.Generator().manual_seed(0), "nhwc")
        g = geometry(i["x"], i["weight"], i["stride"], i["padding"], i["dilation"])
        steps_and_splits.append((g.R * g.S * -(-g.C // 16), splitk._plan(g, splitk.INTERPRETER_CONFIG.kwargs, 0)))
    assert steps_and_splits == [(9, 2), (1, 1), (9, 2)]


def test_conv2d_splitk_choice_of_split(monkeypatch) -> None:
    # On a GPU the split weighs waves against slices. ResNet's 7x7 layer at batch 32 on 132 SMs: 52 tiles of
    # 128 x 128 over 72 steps take 2 slices (104 programs in one wave), not the 3 that would first fill the SMs
    # (156 programs: a second wave of 24); 264 tiles, two full waves, need no split; slices keep at least
    # MIN_STEPS_PER_SPLIT steps; a split never leaves an empty slice.
    monkeypatch.setattr(backend, "interpreting", lambda: False)
    assert splitk._split_k(tiles=52, steps=72, sms=132) == 2
    assert splitk._split_k(tiles=264, steps=72, sms=132) == 1
    assert splitk._split_k(tiles=1, steps=9, sms=132) == 2
    assert splitk._split_k(tiles=1, steps=3, sms=132) == 1
    for tiles in (1, 7, 52, 131, 1000):
        for steps in (1, 5, 9, 18, 72, 200):
            split = splitk._split_k(tiles, steps, 132)
            assert 1 <= split <= splitk.MAX_SPLIT_K
            assert (split - 1) * -(-steps // split) < steps, "the last slice is empty"


def test_conv2d_splitk_is_deterministic_across_slices() -> None:
    # 40 channels in blocks of 16 under the interpreter: 3 x 3 taps x 3 blocks = 27 steps, slices of 14 and 13.
    inputs = _inputs(2, 40, 6, 6, 20, 3, 3, bias=True, relu=True, padding=1, seed=10)
    first, second = (kernels.conv2d(**inputs, variant="splitk") for _ in range(2))
    assert torch.equal(first.view(torch.int16), second.view(torch.int16))
    check_close(first, reference(**spec.upcast(inputs), out=first), SPEC.tolerance(DTYPE))


def test_conv2d_empty_batch() -> None:
    inputs = _inputs(0, 3, 5, 5, 2, 3, 3, bias=True, padding=1)
    y = kernels.conv2d(**inputs)
    assert y.shape == (0, 2, 5, 5)


def test_conv2d_implicit_gemm_has_no_epilogue() -> None:
    with pytest.raises(
        UnsupportedError, match="does not take 'epilogue' inputs; variants that do: naive, fused, splitk"
    ):
        kernels.conv2d(**_inputs(1, 2, 4, 4, 2, 1, 1, bias=True), variant="implicit_gemm")


# -- bad input -----------------------------------------------------------------------------------------------------
def _bad(**changes):
    inputs = _inputs(1, 3, 6, 6, 4, 3, 3, bias=True)
    inputs.update(changes)
    return inputs


def _randn(*shape, dtype=DTYPE):
    return torch.randn(shape, dtype=dtype, device=DEV)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"weight": _randn(4, 5, 3, 3)}, r"C=3 input channels, but weight is \[K, C, R, S\] = \[4, 5, 3, 3\] with C=5"),
        ({"bias": _randn(5)}, r"bias must have shape \[K\] = \[4\] \(weight's output channels\), got \[5\]"),
        ({"bias": _randn(4, 1)}, r"bias must have shape \[K\] = \[4\]"),
        ({"stride": 0}, "stride must be >= 1, got 0"),
        ({"stride": (1, 0)}, r"stride must be >= 1, got \(1, 0\)"),
        ({"dilation": 0}, "dilation must be >= 1, got 0"),
        ({"padding": -1}, "padding must be >= 0, got -1"),
        ({"padding": (1, 2, 3)}, r"padding must be an int or a pair of ints \(height, width\), got \(1, 2, 3\)"),
        ({"stride": 1.5}, "stride must be an int or a pair"),
        ({"dilation": True}, "dilation must be an int or a pair"),
        ({"weight": _randn(4, 3, 7, 3)}, r"output size P x Q = 0 x 4 is not positive"),
        ({"dilation": 4}, r"output size P x Q = -2 x -2 is not positive"),
        ({"weight": _randn(4, 3, 0, 3)}, r"kernel size R x S must be at least 1 x 1"),
        ({"groups": 3}, "groups=3 is not supported: grouped and depthwise convolution are not implemented"),
        ({"groups": 0}, "groups must be a positive int, got 0"),
        ({"relu": "yes"}, "relu must be True or False"),
    ],
    ids=[
        "channels",
        "bias-length",
        "bias-2d",
        "stride-0",
        "stride-pair-0",
        "dilation-0",
        "padding-negative",
        "padding-triple",
        "stride-float",
        "dilation-bool",
        "output-empty",
        "output-negative",
        "kernel-empty",
        "groups",
        "groups-0",
        "relu-not-bool",
    ],
)
def test_conv2d_bad_arguments(changes, message) -> None:
    with pytest.raises(KernelInputError, match=message):
        kernels.conv2d(**_bad(**changes))


@pytest.mark.parametrize(
    "changes",
    [{"x": _randn(3, 6, 6)}, {"x": _randn(1, 1, 3, 6, 6)}, {"weight": _randn(4, 3, 9)}],
    ids=["x-3d", "x-5d", "weight-3d"],
)
def test_conv2d_needs_4d(changes) -> None:
    with pytest.raises(KernelInputError, match=r"x must be 4-D \[N, C, H, W\] and weight 4-D \[K, C, R, S\]"):
        kernels.conv2d(**_bad(**changes))


@pytest.mark.parametrize("name", ["weight", "bias"])
def test_conv2d_mixed_dtypes(name) -> None:
    inputs = _bad()
    inputs[name] = inputs[name].float()
    with pytest.raises(KernelInputError, match=rf"x is torch\.float16 but {name} is torch\.float32; they must match"):
        kernels.conv2d(**inputs)


def test_conv2d_integer_input() -> None:
    inputs = _bad(bias=None)
    inputs["x"] = inputs["x"].to(torch.int32)
    inputs["weight"] = inputs["weight"].to(torch.int32)
    with pytest.raises(KernelInputError, match=r"x must be a floating-point tensor, got torch\.int32"):
        kernels.conv2d(**inputs)


def test_conv2d_float64_is_unsupported() -> None:
    inputs = {k: (v.double() if torch.is_tensor(v) else v) for k, v in _bad().items()}
    with pytest.raises(UnsupportedError, match=r"does not support dtype torch\.float64; it supports f32, f16, bf16"):
        kernels.conv2d(**inputs)
