"""What the asv suite measures, derived from the registry: one case per (variant, shape, dtype) of every op, for the
forward pass, and one more for the backward pass of every variant that has a backward.

``benchmarks/ops.py`` turns these cases into asv benchmarks; this module holds the logic, so that it is tested
like the rest of the framework and the benchmark file stays a thin adapter. Each case records:

- every timed run (CUDA events through ``triton.testing.do_bench``, L2 flushed), so asv's statistics apply;
- the achieved GB/s or TFLOP/s, and the % of the roofline measured in the same run: the device's copy
  bandwidth for a memory-bound op, the op's vendor call (cuBLAS for matmul) for a compute-bound one;
- the worst error against the float64 reference as a fraction of the tolerance (1.0 is the edge of failing),
  so drift that stays inside the tolerance still shows in the history;
- provenance: the variant's version and fingerprint, the autotune config it chose, torch, triton and the GPU.

A backward case ("bwd", ``bench.PASSES``) times the backward launcher alone, as ``python -m kernels bench --pass
bwd`` does: one untimed forward fills the stash, then each timed call is ``Variant.backward`` on it. Its bytes and
FLOPs are the op's backward model (``bench.model``); its error is the worst over the differentiable inputs'
gradients against autograd of the float64 reference (``kernels.gradients``, as the backward tests judge them).
There is no vendor backward to time, so a compute-bound op's backward is set against the FLOP rate of the forward
vendor call: % = backward TFLOP/s / vendor forward TFLOP/s at the same shape.

Under Triton's interpreter (``smoke=True``) the same code runs every variant once at the op's smallest CPU shape,
timed by the host clock: a CPU check that the suite runs, whose figures mean nothing and are never kept.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from kernels import backend, bench, dispatch, gradients, known_failures, memory, registry, spec, timing, tuning
from kernels.cases import PASSES, Case, shape_label, support
from kernels.cases import case_key as case_key  # benchmarks/ops.py reads it from here, on every commit's kernels
from kernels.dtypes import short

SAMPLES = 100
"""Timed runs per case in one round. asv appends rounds (bench-compare runs several), so the statistics see
SAMPLES x rounds values."""
OPS_ENV = "KERNELWATCH_BENCH_OPS"
"""Comma-separated ops to measure (all when unset): the nox sessions set it from ``--op``."""
SMOKE_ENV = "KERNELWATCH_BENCH_SMOKE"
"""Set to 1 to run the suite under Triton's interpreter at tiny shapes (the CPU smoke check)."""
ERROR_CAP = 1e9
"""An error ratio reported for a non-finite output (JSON, and asv, have no infinity)."""


def smoke() -> bool:
    return os.environ.get(SMOKE_ENV, "0") not in ("", "0")


def shapes(op_spec: spec.OpSpec, *, smoke_run: bool | None = None) -> list[tuple[int, ...]]:
    if smoke() if smoke_run is None else smoke_run:
        return [min(op_spec.cpu_shapes, key=math.prod)]
    return [tuple(s) for s in (op_spec.bench_shapes or op_spec.gpu_shapes)]


def params(op: str, *, smoke_run: bool | None = None) -> tuple[list[str], list[str], list[str]]:
    """asv's parameter lists for an op: variant names, shape labels and dtype names."""
    op_spec = spec.get(op)
    return (
        [v.name for v in registry.variants_of(op)],
        [shape_label(s) for s in shapes(op_spec, smoke_run=smoke_run)],
        [short(d) for d in op_spec.bench_dtypes],
    )


def bench_mode(variant: registry.Variant, dtype: torch.dtype) -> str | None:
    """The input mode a variant is timed in: the first it declares that the dtype allows (a fused-epilogue matmul
    declares default first, an fp8 one its scaled modes)."""
    return next((m for m in variant.modes if variant.unsupported_mode(m, dtype) is None), None)


def grid_case(variant: registry.Variant, shape: tuple[int, ...], dtype: torch.dtype, direction: str = "fwd") -> Case:
    """The case at one point of the (variant, shape, dtype) grid, in its bench mode. A variant with no mode for the
    dtype gets its first, so that ``support`` says why."""
    return Case(variant, dtype, tuple(shape), bench_mode(variant, dtype) or variant.modes[0], direction)


def why_not(op: str, variant: str, shape: tuple[int, ...], dtype: torch.dtype, direction: str = "fwd") -> str | None:
    """Why a (variant, shape, dtype) point of the parameter grid is not a case of this pass, or None when it is:
    ``support`` without the machine's checks, which are made when measuring, on the machine that measures.

    benchmarks/ops.py calls this with asv's string parameters, and calls it on older commits' kernels too, so its
    signature stays as it is."""
    return support(grid_case(registry.get(op, variant), shape, dtype, direction), machine=False)


def cases(op: str, *, smoke_run: bool | None = None, direction: str = "fwd") -> list[Case]:
    """The cases of one pass: every point of the op's grid that ``support`` allows (without the machine's checks)."""
    op_spec = spec.get(op)
    return [
        point
        for v in registry.variants_of(op)
        for shape in shapes(op_spec, smoke_run=smoke_run)
        for dtype in op_spec.bench_dtypes
        if support(point := grid_case(v, shape, dtype, direction), machine=False) is None
    ]


def selected_ops() -> list[str]:
    wanted = [o.strip() for o in os.environ.get(OPS_ENV, "").split(",") if o.strip()]
    unknown = sorted(set(wanted) - set(spec.OPS))
    if unknown:
        raise ValueError(f"{OPS_ENV} names unknown ops {unknown}; known: {', '.join(sorted(spec.OPS))}")
    return wanted or sorted(spec.OPS)


# -- measuring ------------------------------------------------------------------------------------------------


def _timer(smoke_run: bool) -> Callable[[Callable[[], object]], list[float]]:
    if not smoke_run:
        return lambda fn: timing.samples_n(fn, SAMPLES)

    def host_clock(fn):
        runs = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            runs.append((time.perf_counter() - start) * 1e3)
        return runs

    return host_clock


def _ratio(got: torch.Tensor, want: torch.Tensor, tol) -> float:
    """max |got - want| / (atol + rtol |want|) over the elements, in float64; ERROR_CAP for a non-finite one."""
    want = want.to(torch.float64)
    ratio = (got.to(torch.float64) - want).abs_().div_(want.abs().mul_(tol.rtol).add_(tol.atol))
    value = ratio.max().item() if ratio.numel() else 0.0
    return min(value, ERROR_CAP) if math.isfinite(value) else ERROR_CAP


def error_ratio(case: Case, inputs: spec.Inputs, out) -> float:
    """max |out - ref| / (atol + rtol |ref|) over every output element, in float64: below 1 passes the suite."""
    op_spec = case.spec
    outs = out if isinstance(out, tuple) else (out,)
    extra = (
        {"out": tuple(o.detach() for o in outs) if len(outs) > 1 else outs[0]} if op_spec.reference_needs_output else {}
    )
    refs = op_spec.reference(**spec.upcast(inputs), **extra)
    refs = refs if isinstance(refs, tuple) else (refs,)
    return max(
        (_ratio(got, want, op_spec.tolerance(got.dtype, case.dtype)) for got, want in zip(outs, refs, strict=True)),
        default=0.0,
    )


def backward_error_ratio(case: Case, inputs: spec.Inputs, out, grad_out, grads: dict) -> float:
    """max |grad - ref| / (atol + rtol |ref|) over every element of every differentiable input's gradient, each at
    the tolerance the backward tests hold it to, against autograd of the float64 reference seeded with the same
    ``grad_out`` (``kernels.gradients``): below 1 passes the suite. ``grads`` is what ``Variant.backward``
    returned; a gradient it left out, or one of the wrong shape, is as wrong as a non-finite one."""
    op_spec = case.spec
    worst = 0.0
    for name, want in gradients.reference(op_spec, inputs, out, grad_out).items():
        got = grads.get(name)
        if got is None or got.shape != want.shape:
            return ERROR_CAP
        worst = max(worst, _ratio(got, want, gradients.tolerance(op_spec, got.dtype, case.dtype, want)))
    return worst


def _environment() -> dict[str, str]:
    import triton

    info = {"torch": torch.__version__, "triton": triton.__version__, "backend": backend.describe()}
    if backend.name() == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = str(torch.version.cuda)
    return info


def measure(ops: list[str] | None = None, *, log: Callable[[str], None] = print) -> dict:
    """Run every case of ``ops`` (default: the selected ones), forward and backward, and return what the benchmarks
    report, by op and case key: ``report["ops"][op]`` holds the forward cases, and for an op with a backward its
    ``"backward"`` key holds the backward ones in the same form. Each (shape, dtype, mode) gets fresh seeded inputs,
    shared by both passes; every case's results are checked against the reference before timing."""
    registry.discover()
    smoke_run = smoke()
    if smoke_run != backend.interpreting():
        raise RuntimeError(
            f"{SMOKE_ENV}=1 (the CPU smoke run) needs TRITON_INTERPRET=1, and timing needs a GPU without it"
        )
    if not smoke_run and backend.name() != "cuda":
        raise RuntimeError("the benchmark suite times kernels on a CUDA GPU; none is visible")
    copy_gbs = float("nan") if smoke_run else timing.copy_bandwidth_gbs()
    run = Run(backend.device(), _timer(smoke_run), copy_gbs, smoke_run)
    report = {"environment": _environment(), "copy_gbs": copy_gbs, "smoke": smoke_run, "ops": {}}
    # The smoke run checks that the suite's machinery reports every case, not the numbers: it runs the cases
    # kernels/known_failures.py refuses on this backend too, as the tests do. A GPU run skips them with the reason.
    with known_failures.lifted() if smoke_run else contextlib.nullcontext():
        for op in ops or selected_ops():
            report["ops"][op] = measure_op(op, run, log)
    return report


@dataclass
class Run:
    """What every case of one measuring run shares: where it runs, how it times (``timer`` returns samples in ms;
    tests pass a fake one), the copy bandwidth, and whether this is the interpreter's smoke run (shapes from
    ``shapes``, no roofline)."""

    device: torch.device
    timer: Callable[[Callable[[], object]], list[float]]
    copy_gbs: float
    smoke: bool
    vendor_ms: dict[tuple[str, tuple[int, ...]], float] = field(default_factory=dict)
    """Median ms of each compute-bound op's vendor call, by (op, shape): timed once, for both passes."""

    def pct_roofline(self, op_spec: spec.OpSpec, shape: tuple[int, ...], ms: float, nbytes: int, flops: int) -> float:
        if self.smoke:
            return float("nan")
        if op_spec.roofline is None:
            return 100 * (nbytes / (ms * 1e-3) / 1e9) / self.copy_gbs
        key = (op_spec.name, shape)
        if key not in self.vendor_ms:
            self.vendor_ms[key] = statistics.median(self.timer(op_spec.roofline(shape, self.device)))
        # The vendor call is a forward. A backward (flops > the forward's) is set against the FLOP rate that call
        # reached: no vendor backward is timed, and the FLOP models say how much more work a backward is. For the
        # forward the factor is 1: the vendor's time over the variant's.
        return 100 * self.vendor_ms[key] / ms * (flops / op_spec.flops(shape))


def roofline_name(op_spec: spec.OpSpec, direction: str = "fwd") -> str:
    """What ``pct_roofline`` is a percentage of, for a pass of this op (the asv unit)."""
    if op_spec.roofline is not None and direction == "bwd":
        return f"{op_spec.roofline_name} forward FLOP rate"
    return op_spec.roofline_name


def measure_op(op: str, run: Run, log: Callable[[str], None] = print) -> dict:
    """Every case of one op, both passes: the op's entry in ``measure``'s report."""
    op_spec = spec.get(op)
    passes = PASSES if op_spec.has_backward else ("fwd",)
    results: dict[str, dict] = {p: {} for p in passes}
    skipped: dict[str, dict] = {p: {} for p in passes}
    # Inputs are drawn once per (shape, dtype, mode) and shared by the variants and both passes: drawing them (on
    # the CPU, so that every machine sees the same numbers) costs more than timing a variant at these sizes.
    groups: dict[tuple, list[Case]] = {}
    for direction in passes:
        for case in cases(op, smoke_run=run.smoke, direction=direction):
            groups.setdefault((case.shape, case.dtype, case.mode), []).append(case)
    for (shape, dtype, mode), group in groups.items():
        runnable = []
        for case in group:
            # The grid's cases are supported as far as the case itself goes: what is left is this machine's say.
            reason = support(case)
            if reason:
                skipped[case.direction][case.key] = reason
            else:
                runnable.append(case)
        if not runnable:
            continue
        generator = torch.Generator().manual_seed(0)
        inputs = op_spec.make_inputs(shape, dtype, run.device, generator, mode)
        grad_out = None
        for case in runnable:
            if case.direction == "fwd":
                result = _measure_forward(case, inputs, run)
            else:
                if grad_out is None:
                    # One output gradient per group, drawn after the inputs (which stay as the forward cases saw
                    # them), for every variant alike, as the bench command draws it.
                    meta_out = op_spec.make_output(dispatch.meta_inputs(inputs))
                    grad_out = bench.make_grad_out(op_spec, meta_out, shape, generator, run.device)
                result = _measure_backward(case, inputs, grad_out, run, log)
            results[case.direction][case.key] = result
            log(
                f"{op} {case.direction} {case.key} [{case.mode}]: {result['ms']:.4f} ms, "
                f"{result['pct_roofline']:.1f}% of {roofline_name(op_spec, case.direction)}, "
                f"error {result['error']:.3g}"
            )
        del inputs, grad_out
        memory.release(run.device)
    record = {
        "roofline": op_spec.roofline_name,
        "throughput_unit": "TFLOP/s" if op_spec.roofline is not None else "GB/s",
        "cases": results["fwd"],
        "skipped": skipped["fwd"],
    }
    if op_spec.has_backward:
        record["backward"] = {
            "roofline": roofline_name(op_spec, "bwd"),
            "cases": results["bwd"],
            "skipped": skipped["bwd"],
        }
    return record


def _measure_forward(case: Case, inputs: spec.Inputs, run: Run) -> dict:
    op_spec, v = case.spec, case.variant
    out = dispatch.allocate_poisoned(case.op, inputs)
    dispatch.run(case.op, inputs, variant=v.name, out=out)  # validates, compiles and autotunes once
    error = error_ratio(case, inputs, out)
    chosen = tuning.chosen_configs(v.module)
    # The launcher alone (stash=None: no backward follows): the entry point's checks are host time, which
    # bench-host measures.
    samples = run.timer(lambda: dispatch.call_forward(v, inputs, out, None))
    nbytes, flops = bench.model(op_spec, "fwd", inputs, out)
    return _result(case, v, samples, nbytes, flops, error, chosen, run)


def _measure_backward(case: Case, inputs: spec.Inputs, grad_out, run: Run, log: Callable[[str], None]) -> dict:
    """The backward launcher alone, after one untimed forward with a stash (``bench.variant_call``). The inputs were
    validated by the forward case of the same point, measured first."""
    op_spec, v = case.spec, case.variant
    out = op_spec.make_output(inputs)
    # The forward and the first backward allocate poisoned buffers, as in the backward tests, so a gradient element
    # that is never written is NaN and shows in the error. They also compile and autotune the backward.
    with memory.poisoned():
        call = bench.variant_call(v, op_spec, "bwd", inputs, grad_out, out=out)
        grads = call()
    try:
        error = backward_error_ratio(case, inputs, out, grad_out, grads)
    except torch.OutOfMemoryError:
        # Autograd of the float64 reference keeps [B, H, S, S] float64 tensors for attention at prefill shapes,
        # which can outgrow the GPU. One case's error series must not cost the whole run (setup_cache measures every
        # case): the time is still measured, the error is recorded as not measured (NaN), and the log says why.
        error = float("nan")
        log(f"{case.op} bwd {case.key}: the float64 reference gradient does not fit on the GPU; error not measured")
    del grads
    memory.release(run.device)
    chosen = tuning.chosen_configs(v.module)
    samples = run.timer(call)
    nbytes, flops = bench.model(op_spec, "bwd", inputs, out)
    return _result(case, v, samples, nbytes, flops, error, chosen, run)


def _result(case: Case, v: registry.Variant, samples, nbytes: int, flops: int, error: float, chosen, run) -> dict:
    op_spec = case.spec
    ms = statistics.median(samples)
    gbs, tflops = nbytes / (ms * 1e-3) / 1e9, flops / (ms * 1e-3) / 1e12
    return {
        "samples": samples,
        "ms": ms,
        "throughput": tflops if op_spec.roofline is not None else gbs,
        "pct_roofline": run.pct_roofline(op_spec, case.shape, ms, nbytes, flops),
        "error": error,
        "mode": case.mode,
        "version": v.version,
        "fingerprint": v.fingerprint,
        "autotune": chosen,
    }


def provenance(report: dict) -> dict:
    """What a results file records beside the numbers: environment, and per op and case (forward, and under
    ``"backward"`` the backward cases) the variant's version, fingerprint, autotune choice and mode."""
    keep = ("version", "fingerprint", "autotune", "mode")

    def cases_of(data: dict) -> dict:
        return {
            "roofline": data["roofline"],
            "cases": {key: {k: c[k] for k in keep} for key, c in data["cases"].items()},
            "skipped": data["skipped"],
        }

    return {
        "environment": report["environment"],
        "copy_gbs": report["copy_gbs"],
        "ops": {
            op: {
                **cases_of(data),
                **({"backward": cases_of(data["backward"])} if "backward" in data else {}),
            }
            for op, data in report["ops"].items()
        },
    }
