"""conv2d: a 2-D convolution (cross-correlation, as ``torch.nn.functional.conv2d``) with an optional bias and ReLU.

    y[N, K, P, Q] = conv2d(x[N, C, H, W], weight[K, C, R, S], bias[K]=None, *, stride=1, padding=0, dilation=1,
                           relu=False)

``stride``, ``padding`` and ``dilation`` are ints or (height, width) pairs. ``x`` may be NCHW-contiguous or
channels-last (``torch.channels_last``: the same logical shape, NHWC in memory), or any other strides; the result
is in x's dtype and in x's memory format. Every product is accumulated in fp32. ``groups`` other than 1 (grouped
and depthwise convolution) is not implemented and is refused.

Problem shape: ``(N, C, H, W, K, R, S, stride, dilation)`` with "same" padding ``dilation * (R - 1) // 2`` for the
generated cases (ResNet's 3x3/pad 1, 1x1/pad 0, 7x7/pad 3); for a call, stride and dilation are the height's.
Padding is not a dimension, so that a padding of 0 is never taken for an empty problem.

Modes: ``nhwc`` (x and weight channels-last, as in a model converted with ``.to(memory_format=torch.channels_last)``),
``nchw`` (both contiguous) and ``epilogue`` (channels-last, with a bias and the ReLU).

The backward gives dx, dweight and dbias. ReLU's gradient masks by the kernel's own output (``out > 0``); the
reference uses that same mask (``reference_needs_output``), because where the exact pre-activation is within the
accumulation error of 0 the kernel's choice of side is as right as the float64 one, and a flipped mask would put a
whole ``dy * w`` term into dx. tests/test_conv2d.py checks the choice itself against float64.
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F

from kernels import dispatch, spec, tolerance
from kernels.errors import KernelInputError
from kernels.ops._util import require_floating, require_same_dtype, require_tensor


def pair(value) -> tuple[int, int]:
    """An int or a (height, width) pair as a pair (already validated)."""
    return (value, value) if isinstance(value, numbers.Integral) else (value[0], value[1])


def is_channels_last(t: torch.Tensor) -> bool:
    """NHWC in memory. A tensor that is both (C == 1, or H == W == 1) counts as NCHW, as torch's own
    suggest_memory_format does."""
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def output_size(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation) -> tuple[int, int]:
    """(P, Q) of the result."""
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(padding), pair(dilation)
    H, W = x.shape[2], x.shape[3]
    R, S = weight.shape[2], weight.shape[3]
    return (H + 2 * ph - dh * (R - 1) - 1) // sh + 1, (W + 2 * pw - dw * (S - 1) - 1) // sw + 1


def reference(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, relu=False, out=None):
    # Also what the cuDNN peer computes. `out` is the kernel's result: with relu, its sign picks the ReLU's side
    # (see the module docstring); without relu it is unused.
    y = F.conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups)
    if relu:
        keep = (y > 0) if out is None else (out > 0).to(y.device)
        y = y * keep
    return y


def _pair_arg(name: str, value, low: int) -> None:
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    ok = len(items) == 2 if isinstance(value, (tuple, list)) else True
    if not ok or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in items):
        raise KernelInputError(f"conv2d: {name} must be an int or a pair of ints (height, width), got {value!r}")
    if any(v < low for v in items):
        raise KernelInputError(f"conv2d: {name} must be >= {low}, got {value!r}")


def _validate(inputs: spec.Inputs) -> None:
    x = require_tensor("conv2d", "x", inputs["x"])
    weight = require_tensor("conv2d", "weight", inputs["weight"])
    bias = inputs.get("bias")
    if x.dim() != 4 or weight.dim() != 4:
        raise KernelInputError(
            f"conv2d: x must be 4-D [N, C, H, W] and weight 4-D [K, C, R, S], got x{tuple(x.shape)} and "
            f"weight{tuple(weight.shape)}"
        )
    groups = inputs.get("groups", 1)
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
        raise KernelInputError(f"conv2d: groups must be a positive int, got {groups!r}")
    if groups != 1:
        raise KernelInputError(
            f"conv2d: groups={groups} is not supported: grouped and depthwise convolution are not implemented "
            "(only groups=1)"
        )
    if x.shape[1] != weight.shape[1]:
        raise KernelInputError(
            f"conv2d: x is [N, C, H, W] = {list(x.shape)} with C={x.shape[1]} input channels, but weight is "
            f"[K, C, R, S] = {list(weight.shape)} with C={weight.shape[1]}; they must match (groups are not supported)"
        )
    require_floating("conv2d", "x", x)
    if bias is not None:
        require_tensor("conv2d", "bias", bias)
        if bias.dim() != 1 or bias.shape[0] != weight.shape[0]:
            raise KernelInputError(
                f"conv2d: bias must have shape [K] = [{weight.shape[0]}] (weight's output channels), "
                f"got {list(bias.shape)}"
            )
        require_same_dtype("conv2d", x=x, weight=weight, bias=bias)
    else:
        require_same_dtype("conv2d", x=x, weight=weight)
    if weight.shape[2] < 1 or weight.shape[3] < 1:
        raise KernelInputError(f"conv2d: weight's kernel size R x S must be at least 1 x 1, got {list(weight.shape)}")
    _pair_arg("stride", inputs.get("stride", 1), 1)
    _pair_arg("padding", inputs.get("padding", 0), 0)
    _pair_arg("dilation", inputs.get("dilation", 1), 1)
    if not isinstance(inputs.get("relu", False), bool):
        raise KernelInputError(f"conv2d: relu must be True or False, got {inputs.get('relu')!r}")
    P, Q = output_size(x, weight, inputs.get("stride", 1), inputs.get("padding", 0), inputs.get("dilation", 1))
    if P <= 0 or Q <= 0:
        raise KernelInputError(
            f"conv2d: output size P x Q = {P} x {Q} is not positive: the input's H x W = {x.shape[2]} x "
            f"{x.shape[3]} with padding {inputs.get('padding', 0)!r} is smaller than the {weight.shape[2]} x "
            f"{weight.shape[3]} kernel dilated by {inputs.get('dilation', 1)!r}"
        )


def _same_padding(R: int, dilation: int) -> int:
    return dilation * (R - 1) // 2


def _make_inputs(shape, dtype, device, generator, mode):
    N, C, H, W, K, R, S, stride, dilation = shape
    # x ~ N(0, 1) and weight scaled by (C*R*S)**-0.5: every output element O(1) whatever the size, so one
    # tolerance table serves every shape.
    x = spec.randn((N, C, H, W), dtype, device, generator)
    weight = spec.randn((K, C, R, S), dtype, device, generator, max(C * R * S, 1) ** -0.5)
    if mode in ("nhwc", "epilogue"):
        x = x.contiguous(memory_format=torch.channels_last)
        weight = weight.contiguous(memory_format=torch.channels_last)
    return {
        "x": x,
        "weight": weight,
        "bias": spec.randn((K,), dtype, device, generator) if mode == "epilogue" else None,
        "stride": stride,
        "padding": _same_padding(R, dilation),
        "dilation": dilation,
        "groups": 1,
        "relu": mode == "epilogue",
    }


def _make_output(i: spec.Inputs) -> torch.Tensor:
    x, weight = i["x"], i["weight"]
    P, Q = output_size(x, weight, i.get("stride", 1), i.get("padding", 0), i.get("dilation", 1))
    fmt = torch.channels_last if is_channels_last(x) else torch.contiguous_format
    return torch.empty((x.shape[0], weight.shape[0], P, Q), dtype=x.dtype, device=x.device, memory_format=fmt)


def _problem_shape(i: spec.Inputs) -> spec.Shape:
    x, weight = i["x"], i["weight"]
    return (*x.shape, weight.shape[0], *weight.shape[2:], pair(i.get("stride", 1))[0], pair(i.get("dilation", 1))[0])


def _mode_of(i: spec.Inputs) -> str:
    if i.get("bias") is not None or i.get("relu", False):
        return "epilogue"
    return "nhwc" if is_channels_last(i["x"]) else "nchw"


def _pq(s: spec.Shape) -> tuple[int, int]:
    _, _, H, W, _, R, S, stride, dilation = s
    pad = _same_padding(R, dilation)
    return (H + 2 * pad - dilation * (R - 1) - 1) // stride + 1, (W + 2 * pad - dilation * (S - 1) - 1) // stride + 1


def _flops(s: spec.Shape) -> int:
    N, C, _, _, K, R, S = s[:7]
    P, Q = _pq(s)
    return 2 * N * K * P * Q * C * R * S


def _bytes(s: spec.Shape, dtype: torch.dtype) -> int:
    N, C, H, W, K, R, S = s[:7]
    P, Q = _pq(s)
    return (N * C * H * W + K * C * R * S + N * K * P * Q) * dtype.itemsize


def _cudnn_channels_last(shape: spec.Shape, device: torch.device):
    """torch.nn.functional.conv2d (cuDNN) on channels-last bf16 x and weight of this shape: issue 5's target."""
    N, C, H, W, K, R, S, stride, dilation = shape
    x = torch.randn((N, C, H, W), dtype=torch.bfloat16, device=device).contiguous(memory_format=torch.channels_last)
    w = torch.randn((K, C, R, S), dtype=torch.bfloat16, device=device).contiguous(memory_format=torch.channels_last)
    pad = _same_padding(R, dilation)
    return lambda: F.conv2d(x, w, stride=stride, padding=pad, dilation=dilation)


def _cudnn(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, relu=False):
    y = F.conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups)
    return torch.relu_(y) if relu else y


SPEC = spec.define(
    spec.OpSpec(
        name="conv2d",
        signature="conv2d(x[N,C,H,W], weight[K,C,R,S], bias[K]=None, *, stride=1, padding=0, dilation=1, "
        "relu=False) -> [N,K,P,Q] in x's memory format",
        dims=("N", "C", "H", "W", "K", "R", "S", "stride", "dilation"),
        reference=reference,
        special_values=spec.SpecialValues(inputs=("x", "weight", "bias")),
        make_inputs=_make_inputs,
        make_output=_make_output,
        problem_shape=_problem_shape,
        validate=_validate,
        operand_dtype=lambda i: i["x"].dtype,
        # Small and odd, as the interpreter is slow at convolution: 3 input channels and a 7 x 5 image under a 3x3
        # kernel; a strided 1x1 (the ResNet downsample, pad 0); a 3x3 dilated by 2 (pad 2) with stride 2.
        cpu_shapes=[(1, 3, 7, 5, 4, 3, 3, 1, 1), (2, 5, 9, 9, 3, 1, 1, 2, 1), (1, 4, 10, 11, 6, 3, 3, 2, 2)],
        gpu_shapes=[
            (1, 3, 7, 5, 4, 3, 3, 1, 1),
            (2, 5, 9, 9, 3, 1, 1, 2, 1),
            (3, 17, 31, 29, 33, 3, 3, 2, 2),
            (2, 3, 224, 224, 64, 7, 7, 2, 1),
            (8, 64, 56, 56, 64, 3, 3, 1, 1),
            (8, 256, 56, 56, 128, 1, 1, 2, 1),
            (8, 512, 7, 7, 512, 3, 3, 1, 1),
        ],
        # ResNet-50 layers at batch 32: conv2_x's 3x3 and 1x1 reduce, conv3_x's 3x3, conv5_x's 3x3.
        bench_shapes=[
            (32, 64, 56, 56, 64, 3, 3, 1, 1),
            (32, 256, 56, 56, 64, 1, 1, 1, 1),
            (32, 128, 28, 28, 128, 3, 3, 1, 1),
            (32, 512, 7, 7, 512, 3, 3, 1, 1),
        ],
        roofline=_cudnn_channels_last,
        roofline_name="cuDNN bf16 channels-last",
        flops=_flops,
        bytes_moved=_bytes,
        has_backward=True,
        grad_inputs=("x", "weight", "bias"),
        # dweight and dbias sum N*P*Q products, dx about K*R*S: this keeps dweight O(N*P*Q ** 0.25) and dx
        # O((K/C) ** 0.5 / (N*P*Q) ** 0.25), both far from 0 and from overflow at the GPU shapes.
        grad_scale=lambda s: max(s[0] * _pq(s)[0] * _pq(s)[1], 1) ** -0.25,
        modes=("nhwc", "nchw", "epilogue"),
        mode_of=_mode_of,
        reference_needs_output=True,
        peers={"cuDNN": lambda: _cudnn},
        tolerance_overrides={
            **tolerance.tensor_core_sums("C*R*S products (4608 at ResNet's 512-channel 3x3) or N*P*Q (dweight)"),
        },
        default_variant="fused",
    )
)


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    relu: bool = False,
    variant: str | None = None,
    out: torch.Tensor | None = None,
):
    """2-D convolution of x (NCHW or channels-last) with weight, plus bias and ReLU, with a kernelwatch variant
    (default: fused); the result is in x's dtype and memory format."""
    inputs = {
        "x": x,
        "weight": weight,
        "bias": bias,
        "stride": stride,
        "padding": padding,
        "dilation": dilation,
        "groups": groups,
        "relu": relu,
    }
    return dispatch.run("conv2d", inputs, variant=variant, out=out)
