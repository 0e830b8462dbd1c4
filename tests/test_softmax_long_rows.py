"""softmax's rows past the backward's on-chip limit, beyond the generated cases: the CPU shape meant to reach the
two-pass backward does (so its coverage cannot vanish with a change of limit), and a row whose max sits in its last,
partly filled block, or that is -inf but for that block, comes out right forward and backward."""

from __future__ import annotations

import torch

import kernels
from kernels import backend, cases, memory, registry, spec
from kernels.tolerance import check_close
from tests import test_correctness
from variants.softmax import _backward

registry.discover()
SPEC = spec.get("softmax")
# The CPU shape past ON_CHIP_MAX_COLS: five 4096-column blocks per row, the last holding 27 columns.
SHAPE = (3, 16411)


class _Launches:
    """Stands in for a kernel in its module, recording the grid of every launch."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.grids = []

    def __getitem__(self, grid):
        self.grids.append(grid)
        return self.kernel[grid]


def _spy(monkeypatch) -> dict[str, _Launches]:
    launches = {}
    for name in ("_on_chip_backward_kernel", "_softmax_backward_kernel"):
        launches[name] = _Launches(getattr(_backward, name))
        monkeypatch.setattr(_backward, name, launches[name])
    return launches


def test_the_long_cpu_shape_takes_the_two_pass_backward(monkeypatch) -> None:
    assert SHAPE in SPEC.cpu_shapes and SHAPE[1] > _backward.ON_CHIP_MAX_COLS
    launches = _spy(monkeypatch)
    (case,) = [
        c
        for c in cases.cases("interpreter", [registry.get("softmax", "autotuned")])
        if c.shape == SHAPE and c.dtype == torch.bfloat16
    ]
    test_correctness.test_backward(case)
    assert launches["_softmax_backward_kernel"].grids == [(SHAPE[0],)]
    assert launches["_on_chip_backward_kernel"].grids == []


def test_short_rows_take_the_on_chip_backward(monkeypatch) -> None:
    launches = _spy(monkeypatch)
    x = spec.randn((5, 4099), torch.float32, backend.device(), torch.Generator().manual_seed(0)).requires_grad_()
    kernels.softmax(x, variant="fused").backward(torch.ones_like(x))
    assert launches["_on_chip_backward_kernel"].grids == [(5,)] and launches["_softmax_backward_kernel"].grids == []


def test_the_row_max_in_the_partial_last_block() -> None:
    x = spec.randn(SHAPE, torch.float32, backend.device(), torch.Generator().manual_seed(0), scale=3.0)
    # Row 1: a max in the last block that dwarfs the rest (exp(100) alone overflows fp32). Row 2: -inf everywhere
    # but the last block.
    x[1, -1] = 100.0
    x[2, : 4 * 4096] = float("-inf")
    x.requires_grad_()
    with memory.poisoned():
        y = kernels.softmax(x, variant="autotuned")
    ref_x = x.detach().double().requires_grad_()
    ref = torch.softmax(ref_x, dim=-1)
    check_close(y, ref, SPEC.tolerance(y.dtype))
    dy = spec.randn(SHAPE, torch.float32, x.device, torch.Generator().manual_seed(1), scale=SPEC.grad_scale(SHAPE))
    with memory.poisoned():
        y.backward(dy)
    ref.backward(dy.double())
    tol = SPEC.tolerance(x.grad.dtype).at_scale(ref_x.grad.pow(2).mean().sqrt().item())
    check_close(x.grad, ref_x.grad, tol, what="dx")
    assert not x.grad[2, : 4 * 4096].any()
