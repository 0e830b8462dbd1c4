"""int8_matmul beyond the generated cases: every autotune config, split-K reductions of several splits, strided
operands, the full int8 range, zero-size problems, the cuBLAS peer's cached weight, and the inputs it refuses."""

from __future__ import annotations

import pytest
import torch
import triton
from triton.runtime.errors import OutOfResources

import kernels
from kernels import backend, dispatch, known_failures, memory, registry, spec
from kernels.errors import KernelInputError
from kernels.ops.int8_matmul import _PreDequantized, reference
from kernels.tolerance import check_close
from variants.int8_matmul import autotuned, splitk

DEV = backend.device()
SPEC = spec.get("int8_matmul")
registry.discover()
VARIANTS = [v.name for v in registry.variants_of("int8_matmul")]  # every variant, a new one included
# fp16: exact under the interpreter and on GPU alike (bf16 tl.dot is a declared interpreter gap).
DTYPE = torch.float16


def _inputs(M, N, K, *, seed=0, dtype=DTYPE):
    return SPEC.make_inputs((M, N, K), dtype, DEV, torch.Generator().manual_seed(seed), "default")


def _check(inputs, variant, *, backward=True, seed=1):
    """Forward into a NaN-poisoned output, then (optionally) dx, both against float64 autograd."""
    inputs = dict(inputs)
    if backward:
        inputs["x"] = inputs["x"].detach().requires_grad_()
    with memory.poisoned():
        y = kernels.int8_matmul(**inputs, variant=variant, out=dispatch.allocate_poisoned("int8_matmul", inputs))
    ref_in = spec.upcast(inputs)
    ref_in["x"].requires_grad_(backward)
    ref = reference(**ref_in)
    tol = SPEC.tolerance(y.dtype)
    check_close(y, ref, tol, what=f"{variant} y")
    if not backward:
        return
    dy = spec.randn(tuple(y.shape), y.dtype, DEV, torch.Generator().manual_seed(seed), SPEC.grad_scale(y.shape))
    with memory.poisoned():
        y.backward(dy)
    ref.backward(dy.double())
    check_close(inputs["x"].grad, ref_in["x"].grad, tol, what=f"{variant} dx")


def _config_dtypes():
    """f16 and f32, and bf16, the dtype decode serves, as a strict expected failure where the interpreter's bf16
    dot gap (declared once, in kernels/known_failures.py) applies."""
    params = [pytest.param(torch.float16, id="f16"), pytest.param(torch.float32, id="f32")]
    gap = known_failures.lookup(
        op="int8_matmul",
        variant="autotuned",
        dtype=torch.bfloat16,
        backend=backend.name(),
        test="test_matches_reference",
        triton=triton.__version__,
    )
    marks = [pytest.mark.xfail(strict=True, reason=gap.describe())] if gap else []
    return [*params, pytest.param(torch.bfloat16, id="bf16", marks=marks)]


# Every config runs here, none pruned: all fit the interpreter (the widest tile, 128 x 256 x 64, is one program
# at this shape). The generated cases run only the first under the interpreter; on a GPU the autotuner times all,
# and drops those that do not fit the GPU's shared memory or registers, as this test skips them, saying so.
@pytest.mark.parametrize(
    "config",
    autotuned.CONFIGS,
    ids=lambda c: "x".join(str(c.kwargs[k]) for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K")) + f"-s{c.num_stages}",
)
@pytest.mark.parametrize("dtype", _config_dtypes())
def test_int8_matmul_every_autotune_config(config, dtype) -> None:
    # M = 19 and N = 70 straddle the 16-row and 16- to 64-column tiles; K = 600 takes more than one 512-wide step.
    inputs = _inputs(19, 70, 600, seed=2, dtype=dtype)
    out = memory.poison_(torch.empty((19, 70), dtype=dtype, device=DEV))
    try:
        with memory.poisoned():
            autotuned.launch(**inputs, out=out, **config.all_kwargs())
    except OutOfResources as exc:
        pytest.skip(f"{config} does not fit this GPU for {dtype} (the autotuner drops it too): {exc}")
    check_close(out, reference(**spec.upcast(inputs)), SPEC.tolerance(dtype), what=str(config))


@pytest.mark.parametrize("shape", SPEC.cpu_shapes[1:])
def test_int8_matmul_splitk_splits_the_cpu_shapes(shape) -> None:
    # Otherwise the generated cases would never reach the second-pass reduction under the interpreter.
    assert splitk.split_of(*shape)[0] > 1


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["f16", "f32"])
def test_int8_matmul_splitk_many_splits(dtype) -> None:
    M, N, K = 2, 20, 300
    assert splitk.split_of(M, N, K)[0] == 5
    _check(_inputs(M, N, K, seed=4, dtype=dtype), "splitk")


@pytest.mark.parametrize("variant", VARIANTS)
def test_int8_matmul_strided_and_transposed_operands(variant) -> None:
    M, N, K = 21, 19, 40
    base = _inputs(M, N, K, seed=3)
    inputs = {
        "x": base["x"].t().contiguous().t(),  # [M, K], column-major
        "w": torch.cat([base["w"], base["w"]], dim=1)[:, ::2],  # [N, K] with a column stride of 2
        "scale": torch.stack([base["scale"], base["scale"]], dim=1)[:, 0],  # [N] with a stride of 2
    }
    assert not any(inputs[n].is_contiguous() for n in ("x", "w", "scale"))
    _check(inputs, variant)


@pytest.mark.parametrize("variant", VARIANTS)
def test_int8_matmul_full_int8_range(variant) -> None:
    # -128 has no positive twin and 127 is the largest value: both must convert exactly, with their signs.
    inputs = _inputs(5, 40, 72, seed=5)
    g = torch.Generator().manual_seed(6)
    w = torch.randint(-128, 128, (40, 72), generator=g, dtype=torch.int8)
    w[0, :4] = torch.tensor([-128, 127, -128, 127], dtype=torch.int8)
    inputs["w"] = w.to(DEV)
    inputs["scale"] = inputs["scale"] / 128
    _check(inputs, variant)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(("M", "N", "K"), [(0, 5, 3), (4, 0, 3), (4, 5, 0)])
def test_int8_matmul_zero_size(variant, M, N, K) -> None:
    inputs = _inputs(M, N, K)
    out = kernels.int8_matmul(**inputs, variant=variant)
    assert out.shape == (M, N) and out.dtype == DTYPE and (out == 0).all()


def test_int8_matmul_scale_gets_no_gradient() -> None:
    inputs = _inputs(4, 4, 4)
    inputs["scale"].requires_grad_()
    with pytest.raises(KernelInputError, match="scale requires grad, but int8_matmul has no gradient"):
        kernels.int8_matmul(**inputs)


def test_int8_matmul_peer_dequantizes_once_per_weight() -> None:
    inputs = _inputs(3, 8, 16, seed=7, dtype=torch.float32)
    peer = _PreDequantized()
    check_close(peer(**inputs), reference(**spec.upcast(inputs)), SPEC.tolerance(torch.float32))
    cached = peer._w_deq
    peer(**inputs)
    assert peer._w_deq is cached, "the weight was dequantized again inside the timed call"
    inputs["w"].neg_()  # in place: same storage, new version
    check_close(peer(**inputs), reference(**spec.upcast(inputs)), SPEC.tolerance(torch.float32))


# -- bad input -----------------------------------------------------------------------------------------------------
def _bad(**changes):
    inputs = _inputs(6, 5, 8)
    inputs.update(changes)
    return inputs


def _int8(*shape):
    return torch.randint(-127, 128, shape, dtype=torch.int8, device=DEV)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"w": _int8(5, 9)}, r"x is \[M, K\] = \[6, 8\] and w is \[N, K\] = \[5, 9\]: their K \(8 and 9\) must match"),
        ({"scale": torch.ones(4, device=DEV)}, r"scale has 4 elements but w is \[N, K\] = \[5, 8\].*N = 5"),
        ({"w": _int8(5, 8).to(torch.uint8)}, r"w must be torch\.int8, got torch\.uint8"),
        ({"w": torch.ones(5, 8, device=DEV)}, r"w must be torch\.int8, got torch\.float32"),
        (
            {"scale": torch.ones(5, dtype=torch.float16, device=DEV)},
            r"scale must be torch\.float32, got torch\.float16",
        ),
        (
            {"scale": torch.ones(5, dtype=torch.float64, device=DEV)},
            r"scale must be torch\.float32, got torch\.float64",
        ),
        (
            {"x": torch.ones(6, 8, dtype=torch.int32, device=DEV)},
            r"x must be a floating-point tensor, got torch\.int32",
        ),
        ({"x": _int8(6, 8)}, r"x must be a floating-point tensor, got torch\.int8"),
    ],
    ids=["K", "scale-length", "w-uint8", "w-float", "scale-f16", "scale-f64", "x-int32", "x-int8"],
)
def test_int8_matmul_bad_shapes_and_dtypes(changes, message) -> None:
    with pytest.raises(KernelInputError, match=message):
        kernels.int8_matmul(**_bad(**changes))


@pytest.mark.parametrize(
    "changes",
    [
        {"x": torch.randn(2, 3, 8, device=DEV)},
        {"x": torch.randn(8, device=DEV)},
        {"w": _int8(5 * 8)},
        {"w": _int8(1, 5, 8)},
        {"scale": torch.ones(5, 1, device=DEV)},
        {"scale": torch.tensor(1.0, device=DEV)},
    ],
    ids=["x-3d", "x-1d", "w-1d", "w-3d", "scale-2d", "scale-0d"],
)
def test_int8_matmul_wrong_ranks(changes) -> None:
    with pytest.raises(KernelInputError, match=r"x must be 2-D \[M, K\], w 2-D \[N, K\] and scale 1-D \[N\]"):
        kernels.int8_matmul(**_bad(**changes))


@pytest.mark.parametrize("name", ["x", "w", "scale"])
def test_int8_matmul_different_devices(name) -> None:
    inputs = _bad()
    inputs[name] = torch.empty(inputs[name].shape, dtype=inputs[name].dtype, device="meta")
    with pytest.raises(KernelInputError, match=rf"inputs are on different devices: .* {name} on meta|x on meta"):
        kernels.int8_matmul(**inputs)


def test_int8_matmul_not_a_tensor() -> None:
    with pytest.raises(KernelInputError, match=r"scale must be a torch\.Tensor, got float"):
        kernels.int8_matmul(**_bad(scale=0.5))
