"""softmax's layouts for long rows beyond the generated cases: the CPU shape meant to reach the span path
(variants/softmax/_spans.py) does, in the autotuned forward and the shared backward, so its coverage cannot vanish
with a change of threshold; spans that hold only -inf, or the whole row's max in the last, partly filled span; and
the backward's two-pass kernel for rows past its on-chip limit."""

from __future__ import annotations

import pytest
import torch

import kernels
from kernels import backend, cases, memory, registry, spec
from kernels.tolerance import check_close
from tests import test_correctness
from variants.softmax import _backward, _spans, autotuned

registry.discover()
SPEC = spec.get("softmax")
# The one CPU shape of the op that is cut into spans: 5 spans of 4096 columns, the last holding 27.
SHAPE = (3, 16411)


def test_cpu_shape_is_cut_into_spans_with_a_partial_last_one() -> None:
    assert SHAPE in SPEC.cpu_shapes
    rows, cols = SHAPE
    assert _spans.takes_spans(rows, cols)
    span_cols, spans = _spans.row_spans(rows, cols)
    assert spans > 1
    assert 0 < cols - (spans - 1) * span_cols < span_cols


def test_short_rows_or_many_rows_keep_one_program_per_row() -> None:
    assert not _spans.takes_spans(1, _spans.ONE_PASS_MAX_COLS)
    assert not _spans.takes_spans(_spans.TARGET_PROGRAMS, 4 * _spans.ONE_PASS_MAX_COLS)
    assert _spans.takes_spans(_spans.TARGET_PROGRAMS - 1, _spans.ONE_PASS_MAX_COLS + 1)


class _Launches:
    """Stands in for a kernel in its module, recording the grid of every launch."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.grids = []

    def __getitem__(self, grid):
        self.grids.append(grid)
        return self.kernel[grid]


@pytest.fixture
def span_launches(monkeypatch):
    launches = {}
    for module, name in [
        (autotuned, "_span_stats_autotuned"),
        (autotuned, "_span_normalize_autotuned"),
        (_backward, "_span_grad_stats_kernel"),
        (_backward, "_span_backward_kernel"),
    ]:
        launches[name] = _Launches(getattr(module, name))
        monkeypatch.setattr(module, name, launches[name])
    return launches


def test_generated_case_at_the_span_shape_runs_the_span_kernels(span_launches) -> None:
    variant = registry.get("softmax", "autotuned")
    (case,) = [c for c in cases.cases("interpreter", [variant]) if c.shape == SHAPE and c.dtype == torch.bfloat16]
    test_correctness.test_matches_reference(case)
    test_correctness.test_backward(case)
    # Both tests run the forward; each launch is over (rows, spans).
    grid = (SHAPE[0], _spans.row_spans(*SHAPE)[1])
    grids = {name: frozenset(launch.grids) for name, launch in span_launches.items()}
    assert grids == dict.fromkeys(span_launches, frozenset([grid]))


def test_spans_of_only_minus_inf_and_the_row_max_in_the_partial_last_span(span_launches) -> None:
    rows, cols = SHAPE
    span_cols, spans = _spans.row_spans(rows, cols)
    x = spec.randn(SHAPE, torch.float32, backend.device(), torch.Generator().manual_seed(0), scale=3.0)
    # Row 0: a span of -inf in the middle. Row 1: a max in the last span that dwarfs the rest (exp(100) alone
    # overflows fp32). Row 2: -inf everywhere but the last span.
    x[0, span_cols : 2 * span_cols] = float("-inf")
    x[1, -1] = 100.0
    x[2, : (spans - 1) * span_cols] = float("-inf")
    x.requires_grad_()
    with memory.poisoned():
        y = kernels.softmax(x, variant="autotuned")
    ref_x = x.detach().double().requires_grad_()
    ref = torch.softmax(ref_x, dim=-1)
    check_close(y, ref, SPEC.tolerance(y.dtype))

    dy = spec.randn(SHAPE, torch.float32, x.device, torch.Generator().manual_seed(1), scale=SPEC.grad_scale(SHAPE))
    y.backward(dy)
    ref.backward(dy.double())
    tol = SPEC.tolerance(x.grad.dtype).at_scale(ref_x.grad.pow(2).mean().sqrt().item())
    check_close(x.grad, ref_x.grad, tol, what="dx")
    assert not x.grad[0, span_cols : 2 * span_cols].any() and not x.grad[2, : (spans - 1) * span_cols].any()
    assert {name: len(launch.grids) for name, launch in span_launches.items()} == dict.fromkeys(span_launches, 1)


def test_rows_past_the_on_chip_limit_take_the_two_pass_backward(monkeypatch) -> None:
    # Rows longer than ON_CHIP_MAX_COLS and many enough to fill the GPU loop over the row twice; at the real limits
    # that needs 1056 rows of 16385 columns, too many for the interpreter, so the limit is lowered to reach it.
    monkeypatch.setattr(_backward, "ON_CHIP_MAX_COLS", 64)
    launches = _Launches(_backward._softmax_backward_kernel)
    monkeypatch.setattr(_backward, "_softmax_backward_kernel", launches)
    shape = (7, 4099)  # several 4096-column blocks per row, the last one nearly empty
    assert not _spans.takes_spans(*shape)
    x = spec.randn(shape, torch.float32, backend.device(), torch.Generator().manual_seed(2), scale=3.0)
    x.requires_grad_()
    y = kernels.softmax(x, variant="fused")
    dy = spec.randn(shape, torch.float32, x.device, torch.Generator().manual_seed(3), scale=SPEC.grad_scale(shape))
    with memory.poisoned():
        y.backward(dy)
    ref_x = x.detach().double().requires_grad_()
    torch.softmax(ref_x, dim=-1).backward(dy.double())
    check_close(x.grad, ref_x.grad, SPEC.tolerance(x.grad.dtype), what="dx")
    assert launches.grids == [(shape[0],)]
