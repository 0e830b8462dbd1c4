"""Bad input gets a clear error naming the problem, or a correct result. Never a wrong answer or a crash."""

from __future__ import annotations

import pytest
import torch

import kernels
from kernels import backend, spec
from kernels.errors import KernelInputError, UnsupportedError
from kernels.tolerance import check_close

DEV = backend.device()
# A device the current backend cannot run on: the CPU under CUDA, and the meta device under the interpreter.
WRONG = torch.device("meta") if DEV.type == "cpu" else torch.device("cpu")


def rand(*shape, dtype=torch.float32):
    return torch.randn(shape, dtype=dtype, device=DEV)


def ref_matmul(a, b, **kw):
    return spec.get("matmul").reference(**spec.upcast({"a": a, "b": b, **kw}))


# -- device -------------------------------------------------------------------------------------------------------
def test_mismatched_devices() -> None:
    with pytest.raises(KernelInputError, match=r"different devices: a on .* b on meta"):
        kernels.matmul(rand(4, 4), torch.empty(4, 4, device="meta"), variant="naive")


def test_device_the_backend_cannot_use() -> None:
    x = torch.randn(8, 8, device=WRONG)
    with pytest.raises(KernelInputError, match=r"x is on (meta|cpu)"):
        kernels.softmax(x, variant="naive")


# -- dtype --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["naive", "splitk", "fused"])
def test_unsupported_dtype_names_what_is_supported(variant) -> None:
    with pytest.raises(UnsupportedError, match=r"does not support dtype torch.float64; it supports f32, f16, bf16"):
        kernels.matmul(rand(4, 4, dtype=torch.float64), rand(4, 4, dtype=torch.float64), variant=variant)


def test_integer_inputs() -> None:
    a = torch.ones(4, 4, dtype=torch.int32, device=DEV)
    with pytest.raises(KernelInputError, match="floating point"):
        kernels.matmul(a, a)
    with pytest.raises(KernelInputError, match="floating-point"):
        kernels.softmax(a)


def test_mixed_dtypes() -> None:
    with pytest.raises(KernelInputError, match=r"a is torch\.float32 but b is torch\.float16"):
        kernels.matmul(rand(4, 4), rand(4, 4, dtype=torch.float16))


def test_fp8_needs_scales_and_plain_matmul_takes_none() -> None:
    a = rand(16, 16).to(torch.float8_e4m3fn)
    with pytest.raises(KernelInputError, match="fp8 operands need both scale_a and scale_b"):
        kernels.matmul(a, a, variant="fp8")
    one = torch.ones(1, device=DEV)
    with pytest.raises(KernelInputError, match="only fp8 operands take scales"):
        kernels.matmul(rand(4, 4), rand(4, 4), scale_a=one, scale_b=one)


def test_variant_without_the_mode() -> None:
    with pytest.raises(UnsupportedError, match="does not take 'epilogue' inputs; variants that do: fused"):
        kernels.matmul(rand(4, 4), rand(4, 4), bias=rand(4), activation="relu", variant="naive")


# -- shape --------------------------------------------------------------------------------------------------------
def test_matmul_inner_dimensions() -> None:
    with pytest.raises(KernelInputError, match=r"inner dimensions 5 and 6 differ"):
        kernels.matmul(rand(4, 5), rand(6, 3))


def test_matmul_needs_2d() -> None:
    with pytest.raises(KernelInputError, match="must be 2-D"):
        kernels.matmul(rand(2, 4, 5), rand(5, 3))


def test_unknown_activation() -> None:
    with pytest.raises(KernelInputError, match="activation must be one of"):
        kernels.matmul(rand(4, 4), rand(4, 4), activation="swish", variant="fused")


def test_bias_shape() -> None:
    with pytest.raises(KernelInputError, match=r"bias must have shape \[N\] = \[3\], got \[4\]"):
        kernels.matmul(rand(4, 5), rand(5, 3), bias=rand(4), variant="fused")


def test_add_shapes_must_match() -> None:
    with pytest.raises(KernelInputError, match=r"x has shape \(4,\) but y has \(5,\)"):
        kernels.add(rand(4), rand(5))


def test_out_of_the_variants_limits() -> None:
    with pytest.raises(
        UnsupportedError, match=r"softmax.fused v\d+\.\d+\.\d+ supports 1 <= cols <= 32768, got cols=32769"
    ):
        kernels.softmax(rand(2, 32769), variant="fused")


def test_wrong_out_tensor() -> None:
    with pytest.raises(KernelInputError, match=r"out has shape \(3, 3\).*expected shape \(4, 3\)"):
        kernels.matmul(rand(4, 5), rand(5, 3), out=rand(3, 3))


def test_scalar_softmax() -> None:
    with pytest.raises(KernelInputError, match="at least one dimension"):
        kernels.softmax(torch.tensor(1.0, device=DEV))


# -- layout: handled correctly, or refused --------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["naive", "autotuned", "splitk", "fused"])
def test_matmul_transposed_and_sliced_operands_are_handled(variant) -> None:
    a = rand(70, 33).t()[:, :45]  # [33, 45], column-major
    b = rand(90, 41)[::2, 3:40]  # [45, 37], row stride 82, starting 3 elements in
    out = kernels.matmul(a, b, variant=variant)
    check_close(out, ref_matmul(a, b), spec.get("matmul").tolerance(torch.float32))


def test_softmax_rows_with_padding_are_handled() -> None:
    x = rand(7, 300)[:, :129]
    check_close(
        kernels.softmax(x, variant="naive"), torch.softmax(x.double(), -1), spec.get("softmax").tolerance(x.dtype)
    )


def test_softmax_strided_last_dim_is_refused() -> None:
    with pytest.raises(KernelInputError, match="last dimension of x must be contiguous"):
        kernels.softmax(rand(8, 16)[:, ::2])


def test_add_non_contiguous_is_refused() -> None:
    with pytest.raises(KernelInputError, match="x is not contiguous"):
        kernels.add(rand(8, 8).t(), rand(8, 8))


# -- zero-size: the right (empty or constant) result ----------------------------------------------------------------
@pytest.mark.parametrize(("M", "N", "K"), [(0, 5, 3), (4, 0, 3), (4, 5, 0)])
def test_matmul_zero_size(M, N, K) -> None:
    a, b = rand(M, K), rand(K, N)
    out = kernels.matmul(a, b)
    assert out.shape == (M, N) and (out == 0).all()


def test_matmul_empty_k_with_epilogue_is_the_epilogue_of_the_bias() -> None:
    bias = rand(5)
    out = kernels.matmul(rand(4, 0), rand(0, 5), bias=bias, activation="gelu", variant="fused")
    check_close(out, torch.nn.functional.gelu(bias.double()).expand(4, 5), spec.get("matmul").tolerance(torch.float32))


@pytest.mark.parametrize("shape", [(0, 7), (3, 0), (2, 0, 5)])
def test_softmax_zero_size(shape) -> None:
    x = torch.randn(shape, device=DEV)
    assert kernels.softmax(x).shape == x.shape


def test_add_zero_size() -> None:
    assert kernels.add(rand(0), rand(0)).shape == (0,)


# -- sizes past 32-bit indexing -------------------------------------------------------------------------------------
def test_output_past_32_bit_indexing_is_refused_before_allocation() -> None:
    # Stride-0 operands cost no memory; the 2**31-element output is refused before it would be allocated.
    a = rand(1, 8).expand(2**16, 8)
    b = rand(8, 1).expand(8, 2**15)
    with pytest.raises(KernelInputError, match=r"out with shape \(65536, 32768\).*32-bit"):
        kernels.matmul(a, b, variant="naive")


def test_stride_zero_inputs_are_fine() -> None:
    a, b = rand(1, 8).expand(40, 8), rand(8, 30)
    check_close(kernels.matmul(a, b, variant="naive"), ref_matmul(a, b), spec.get("matmul").tolerance(torch.float32))


# -- gradients the op does not define -------------------------------------------------------------------------------
def test_gradient_for_an_input_without_one_is_refused() -> None:
    x = rand(16, 16).to(torch.float8_e4m3fn)
    scale = torch.ones(1, device=DEV, requires_grad=True)
    with pytest.raises(KernelInputError, match="no gradient with respect to scale_a"):
        kernels.matmul(x, x, scale_a=scale, scale_b=torch.ones(1, device=DEV), variant="fp8")


def test_zero_size_keeps_autograd_connected() -> None:
    x = torch.randn(3, 0, device=DEV, requires_grad=True)
    kernels.softmax(x).sum().backward()
    assert x.grad is not None and x.grad.shape == (3, 0)
