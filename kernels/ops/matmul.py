"""matmul: ``act((a * scale_a) @ (b * scale_b) + bias)`` with fp32 accumulation.

Modes:
- ``default``: ``a @ b``.
- ``epilogue``: an optional bias over N and an optional activation (ReLU, or GELU in its erf form) applied in
  the epilogue. The generated test inputs use a bias and GELU; tests/test_matmul.py covers the other pairs.
- ``scaled_tensor`` / ``scaled_row``: fp8 e4m3 operands with float32 dequantization scales, one per tensor or
  one per row of ``a`` and per column of ``b``; the result is bf16.
"""

from __future__ import annotations

import torch

from kernels import dispatch, spec, tolerance
from kernels.errors import KernelInputError
from kernels.ops._util import require_same_dtype, require_tensor

ACTIVATIONS = (None, "relu", "gelu")
FP8_MAX = {torch.float8_e4m3fn: 448.0, torch.float8_e5m2: 57344.0}


def _apply_activation(y: torch.Tensor, activation: str | None) -> torch.Tensor:
    if activation is None:
        return y
    if activation == "relu":
        return torch.relu(y)
    return torch.nn.functional.gelu(y)


def reference(a, b, bias=None, activation=None, scale_a=None, scale_b=None):
    if scale_a is not None:
        a = a * scale_a
    if scale_b is not None:
        b = b * scale_b
    y = a @ b
    if bias is not None:
        y = y + bias
    return _apply_activation(y, activation)


def _mode_of(inputs: spec.Inputs) -> str:
    scale_a = inputs.get("scale_a")
    if scale_a is not None:
        return "scaled_tensor" if scale_a.dim() == 1 else "scaled_row"
    if inputs.get("bias") is not None or inputs.get("activation") is not None:
        return "epilogue"
    return "default"


def _out_dtype(a: torch.Tensor) -> torch.dtype:
    return torch.bfloat16 if a.dtype in FP8_MAX else a.dtype


def _validate(inputs: spec.Inputs) -> None:
    a = require_tensor("matmul", "a", inputs["a"])
    b = require_tensor("matmul", "b", inputs["b"])
    if a.dim() != 2 or b.dim() != 2:
        raise KernelInputError(f"matmul: a and b must be 2-D, got a{tuple(a.shape)} and b{tuple(b.shape)}")
    if a.shape[1] != b.shape[0]:
        raise KernelInputError(
            f"matmul: a is [M, K] = {list(a.shape)} and b is [K, N] = {list(b.shape)}: "
            f"inner dimensions {a.shape[1]} and {b.shape[0]} differ"
        )
    require_same_dtype("matmul", a=a, b=b)
    if not a.is_floating_point():
        raise KernelInputError(f"matmul: a and b must be floating point, got {a.dtype}")
    M, N = a.shape[0], b.shape[1]
    activation = inputs.get("activation")
    if activation not in ACTIVATIONS:
        raise KernelInputError(f"matmul: activation must be one of {ACTIVATIONS}, got {activation!r}")
    bias = inputs.get("bias")
    if bias is not None:
        require_tensor("matmul", "bias", bias)
        if bias.shape != (N,):
            raise KernelInputError(f"matmul: bias must have shape [N] = [{N}], got {list(bias.shape)}")
        if bias.dtype != _out_dtype(a):
            raise KernelInputError(f"matmul: bias is {bias.dtype} but the result is {_out_dtype(a)}; they must match")
    scale_a, scale_b = inputs.get("scale_a"), inputs.get("scale_b")
    fp8 = a.dtype in FP8_MAX
    if fp8 != (scale_a is not None) or (scale_a is None) != (scale_b is None):
        raise KernelInputError(
            "matmul: fp8 operands need both scale_a and scale_b, and only fp8 operands take scales "
            f"(a is {a.dtype}, scale_a {'given' if scale_a is not None else 'missing'}, "
            f"scale_b {'given' if scale_b is not None else 'missing'})"
        )
    if fp8:
        for name, s, rowwise in (("scale_a", scale_a, (M, 1)), ("scale_b", scale_b, (1, N))):
            require_tensor("matmul", name, s)
            if s.dtype != torch.float32:
                raise KernelInputError(f"matmul: {name} must be float32, got {s.dtype}")
            # Per tensor is 1-D and per row 2-D, so a [1, 1] per-row scale (M == 1) is not mistaken for per tensor.
            if s.shape not in ((1,), rowwise):
                raise KernelInputError(
                    f"matmul: {name} must have shape [1] (per tensor) or {list(rowwise)} (per row), got {list(s.shape)}"
                )
            if not s.is_contiguous():
                raise KernelInputError(f"matmul: {name} must be contiguous")
        if scale_a.dim() != scale_b.dim():
            raise KernelInputError("matmul: scale_a and scale_b must both be per-tensor [1] or both per-row")


def _quantize(x: torch.Tensor, dtype: torch.dtype, dim: int | None):
    """``x`` in fp8 with a float32 scale so that ``q * scale ~= x`` (per tensor, or reducing over ``dim``)."""
    amax = x.abs().amax() if dim is None else x.abs().amax(dim=dim, keepdim=True)
    scale = (amax.float() / FP8_MAX[dtype]).clamp_min(1e-12)
    q = (x / scale).clamp(-FP8_MAX[dtype], FP8_MAX[dtype]).to(dtype)
    return q, scale.reshape(1) if dim is None else scale


def _make_inputs(shape, dtype, device, generator, mode):
    M, N, K = shape
    # Operands scaled by K**-0.25 keep every output element O(1) whatever K is, so one tolerance table serves.
    scale = max(K, 1) ** -0.25
    if dtype in FP8_MAX:
        a = spec.randn((M, K), torch.float32, device, generator, scale)
        b = spec.randn((K, N), torch.float32, device, generator, scale)
        per_row = mode == "scaled_row"
        qa, sa = _quantize(a, dtype, 1 if per_row else None)
        qb, sb = _quantize(b, dtype, 0 if per_row else None)
        return {"a": qa, "b": qb, "scale_a": sa, "scale_b": sb}
    inputs = {
        "a": spec.randn((M, K), dtype, device, generator, scale),
        "b": spec.randn((K, N), dtype, device, generator, scale),
    }
    if mode == "epilogue":
        inputs["bias"] = spec.randn((N,), dtype, device, generator)
        inputs["activation"] = "gelu"
    return inputs


def _cublas_bf16(shape: spec.Shape, device: torch.device):
    """torch.matmul (cuBLAS) on bf16 operands of this shape: the ceiling every matmul variant is reported against,
    fp8 ones included (they should beat it)."""
    M, N, K = shape
    a = torch.randn((M, K), dtype=torch.bfloat16, device=device)
    b = torch.randn((K, N), dtype=torch.bfloat16, device=device)
    return lambda: torch.matmul(a, b)


SPEC = spec.define(
    spec.OpSpec(
        name="matmul",
        signature="matmul(a[M,K], b[K,N], *, bias[N]=None, activation=None|'relu'|'gelu', "
        "scale_a=None, scale_b=None) -> [M,N]",
        dims=("M", "N", "K"),
        reference=reference,
        special_values=spec.SpecialValues(
            inputs=("a", "b", "bias"),
            not_applicable={
                "scale_a": "a dequantization scale from the quantizer, never user data",
                "scale_b": "a dequantization scale from the quantizer, never user data",
            },
            differences={
                "fp8:nan": "open (issue 16): a NaN fp8 code does not propagate through the fp8 kernel under the "
                "interpreter; not yet checked on a GPU",
            },
        ),
        make_inputs=_make_inputs,
        make_output=lambda i: torch.empty(
            (i["a"].shape[0], i["b"].shape[1]), dtype=_out_dtype(i["a"]), device=i["a"].device
        ),
        problem_shape=lambda i: (i["a"].shape[0], i["b"].shape[1], i["a"].shape[1]),
        validate=_validate,
        operand_dtype=lambda i: i["a"].dtype,
        # (127, 255, 63): ragged in every dim; (33, 17, 5): K smaller than any tile; (1, 1, 1): a single element.
        cpu_shapes=[(1, 1, 1), (33, 17, 5), (64, 64, 64), (127, 255, 63), (130, 67, 300)],
        gpu_shapes=[
            (1, 1, 1),
            (33, 17, 5),
            (127, 255, 63),
            (1000, 1000, 1000),
            (16, 8192, 8192),
            (4096, 4096, 4096),
            (1024, 1024, 16384),
        ],
        # Square prefill sizes, a split-K shape (K much larger than M and N) and a decode shape (M = 16).
        bench_shapes=[(4096, 4096, 4096), (8192, 8192, 8192), (1024, 1024, 65536), (16, 8192, 8192)],
        bench_dtypes=(torch.bfloat16, torch.float8_e4m3fn),
        roofline=_cublas_bf16,
        roofline_name="cuBLAS bf16",
        flops=lambda s: 2 * s[0] * s[1] * s[2],
        bytes_moved=lambda s, dtype: (s[0] * s[2] + s[2] * s[1] + s[0] * s[1]) * dtype.itemsize,
        has_backward=True,
        grad_inputs=("a", "b", "bias"),
        # da sums N products and db and dbias sum M: this keeps every gradient element at most O(1).
        grad_scale=lambda s: max(s[0], s[1], 1) ** -0.5,
        modes=("default", "epilogue", "scaled_tensor", "scaled_row"),
        mode_of=_mode_of,
        mode_allows=lambda mode, dtype: mode.startswith("scaled_") == (dtype in FP8_MAX),
        tolerance_overrides={
            **tolerance.tensor_core_sums("K products (K up to 16k at the GPU shapes)"),
            torch.float8_e4m3fn: tolerance.override(
                atol=1e-2,
                rtol=tolerance.RESOLUTION[torch.bfloat16].rtol,
                reason="Hopper's fp8 MMA adds products in a ~14-bit accumulator between promotions to fp32 (cuBLAS "
                "misses the bf16 row the same way); the operands themselves are exact in the reference",
            ),
        },
        default_variant="autotuned",
    )
)


def matmul(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    scale_a: torch.Tensor | None = None,
    scale_b: torch.Tensor | None = None,
    variant: str | None = None,
    out: torch.Tensor | None = None,
):
    """``act((a * scale_a) @ (b * scale_b) + bias)`` with a kernelwatch variant (default: autotuned)."""
    inputs = {"a": a, "b": b}
    for key, value in (("bias", bias), ("activation", activation), ("scale_a", scale_a), ("scale_b", scale_b)):
        if value is not None:
            inputs[key] = value
    return dispatch.run("matmul", inputs, variant=variant, out=out)
