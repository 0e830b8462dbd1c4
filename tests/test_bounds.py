"""The interpreter's bounds check (kernels/bounds.py) catches what a GPU would fault on, and lets masked lanes be."""

from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl

from kernels import backend, bounds

interpreted = pytest.mark.skipif(backend.name() != "interpreter", reason="checks Triton's interpreter, not a GPU")


@triton.jit
def _copy(src_ptr, dst_ptr, n, BLOCK: tl.constexpr, MASK_LOAD: tl.constexpr, MASK_STORE: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    # Triton's ternary on a constexpr keeps the unmasked load a plain load.
    v = tl.load(src_ptr + offs, mask=offs < n, other=0.0) if MASK_LOAD else tl.load(src_ptr + offs)
    if MASK_STORE:
        tl.store(dst_ptr + offs, v, mask=offs < n)
    else:
        tl.store(dst_ptr + offs, v)


@triton.jit
def _shifted_add(dst_ptr, n, SHIFT: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK) + SHIFT
    tl.atomic_add(dst_ptr + offs, 1.0, mask=offs < n)


@triton.jit
def _desc_copy(src_desc, dst_desc):
    tile = src_desc.load([0, 0])
    dst_desc.store([0, 0], tile)


def _pair(n=37):
    # Allocated far apart on purpose: a stray lane that lands inside the other tensor is not seen (see below).
    src = torch.randn(n)
    pad = torch.empty(4096)
    dst = torch.full((n,), float("nan"))
    return src, pad, dst


@interpreted
def test_masked_lanes_may_point_anywhere() -> None:
    src, _, dst = _pair()
    with bounds.check():
        _copy[(1,)](src, dst, src.numel(), BLOCK=64, MASK_LOAD=True, MASK_STORE=True)
    assert torch.equal(dst, src)


@interpreted
@pytest.mark.parametrize(("mask_load", "mask_store", "what"), [(False, True, "load"), (True, False, "store")])
def test_an_unmasked_lane_past_the_end_is_refused(mask_load, mask_store, what) -> None:
    src, _, dst = _pair()
    with bounds.check(), pytest.raises(Exception, match=rf"_copy: {what} of 27 unmasked lane\(s\).*past the end"):
        _copy[(1,)](src, dst, src.numel(), BLOCK=64, MASK_LOAD=mask_load, MASK_STORE=mask_store)


@interpreted
def test_an_atomic_before_the_start_is_refused() -> None:
    dst = torch.zeros(16)
    with bounds.check(), pytest.raises(Exception, match=r"atomic of 4 unmasked lane\(s\).*before the start"):
        _shifted_add[(1,)](dst, dst.numel(), SHIFT=-4, BLOCK=16)


@interpreted
def test_the_suite_runs_checked_and_a_nested_check_keeps_it() -> None:
    from triton.runtime import interpreter

    assert interpreter.GridExecutor._kernelwatch_bounds, "tests/conftest.py checks every interpreted test"
    outer = interpreter.InterpreterBuilder.create_masked_load
    with bounds.check():
        pass
    assert interpreter.InterpreterBuilder.create_masked_load is outer
    assert interpreter.GridExecutor._kernelwatch_bounds


@pytest.mark.parametrize(
    ("text", "fatal"),
    [
        ("CUDA error: an illegal memory access was encountered", True),
        ("Triton Error [CUDA]: misaligned address", True),
        ("CUDA error: device-side assert triggered", True),
        ("CUDA out of memory. Tried to allocate 2.00 GiB", False),
        ("attention: q has head_dim 64 but k has 128", False),
    ],
)
def test_fatal_cuda_errors_are_told_apart(text, fatal) -> None:
    # tests/conftest.py ends a worker on these (its CUDA context is lost) so the faulting test is named, not buried.
    assert backend.is_fatal_cuda_error(RuntimeError(text)) is fatal


def test_the_gpu_tiles_plugin_fools_only_the_variants() -> None:
    from tests import gpu_tiles

    assert gpu_tiles.answers_false_to("variants.attention.flash")
    assert not gpu_tiles.answers_false_to("kernels.dispatch")
    assert not gpu_tiles.answers_false_to("variants_extra")


def test_failures_are_named_as_they_happen(capsys, monkeypatch) -> None:
    # What a GPU run that is killed before its summary still leaves in its log. Said by the xdist controller,
    # which this test plays (it may itself run in a worker).
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    from types import SimpleNamespace

    from tests import conftest

    crash = SimpleNamespace(
        reprcrash=SimpleNamespace(message="AssertionError: dx of case: 3 of 9 elements outside\nmore")
    )
    failed = SimpleNamespace(failed=True, nodeid="tests/x.py::test_y[a]", when="call", longrepr=crash, longreprtext="")
    conftest.pytest_runtest_logreport(failed)
    bare = SimpleNamespace(
        failed=True, nodeid="tests/x.py::test_w", when="setup", longrepr="E  why", longreprtext="E  why"
    )
    conftest.pytest_runtest_logreport(bare)
    conftest.pytest_runtest_logreport(SimpleNamespace(failed=False, nodeid="tests/x.py::test_z", when="call"))
    err = capsys.readouterr().err
    assert (
        "kernelwatch: FAILED tests/x.py::test_y[a] (call): AssertionError: dx of case: 3 of 9 elements outside\n" in err
    )
    assert "kernelwatch: FAILED tests/x.py::test_w (setup): E  why" in err
    assert "test_z" not in err


@interpreted
def test_tensor_descriptor_loads_and_stores_run_under_the_check() -> None:
    # The interpreter turns a descriptor load or store into a masked one with keyword arguments; the lanes past the
    # descriptor's shape are masked off, so a tile larger than the tensor passes.
    from triton.tools.tensor_descriptor import TensorDescriptor

    src = torch.randn(3, 8)
    dst = torch.full((3, 8), float("nan"))
    with bounds.check():
        _desc_copy[(1,)](TensorDescriptor.from_tensor(src, [4, 8]), TensorDescriptor.from_tensor(dst, [4, 8]))
    assert torch.equal(dst, src)
