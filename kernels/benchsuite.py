"""What the asv suite measures, derived from the registry: one case per (variant, shape, dtype) of every op.

``benchmarks/ops.py`` turns these cases into asv benchmarks; this module holds the logic, so that it is tested
like the rest of the framework and the benchmark file stays a thin adapter. Each case records:

- every timed run (CUDA events through ``triton.testing.do_bench``, L2 flushed), so asv's statistics apply;
- the achieved GB/s or TFLOP/s, and the % of the roofline measured in the same run: the device's copy
  bandwidth for a memory-bound op, the op's vendor call (cuBLAS for matmul) for a compute-bound one;
- the worst error against the float64 reference as a fraction of the tolerance (1.0 is the edge of failing),
  so drift that stays inside the tolerance still shows in the history;
- provenance: the variant's version and fingerprint, the autotune config it chose, torch, triton and the GPU.

Under Triton's interpreter (``smoke=True``) the same code runs every variant once at the op's smallest CPU shape,
timed by the host clock: a CPU check that the suite runs, whose figures mean nothing and are never kept.
"""

from __future__ import annotations

import gc
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from kernels import backend, dispatch, registry, spec, timing, tuning
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


@dataclass(frozen=True)
class Case:
    op: str
    variant: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    mode: str

    @property
    def key(self) -> str:
        return case_key(self.variant, shape_label(self.shape), short(self.dtype))


def case_key(variant: str, shape: str, dtype: str) -> str:
    return f"{variant}|{shape}|{dtype}"


def shape_label(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


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
    op_spec = variant.spec
    return next((m for m in variant.modes if op_spec.mode_allows(m, dtype)), None)


def why_not(op: str, variant: str, shape: tuple[int, ...], dtype: torch.dtype) -> str | None:
    """Why a (variant, shape, dtype) point of the parameter grid is not a case, or None when it is. Backend and
    compute capability are checked when measuring, on the machine that measures."""
    v = registry.get(op, variant)
    reason = v.unsupported_dtype(dtype) or v.unsupported_shape(shape)
    if reason is None and bench_mode(v, dtype) is None:
        reason = f"{v.key} declares no mode that takes {short(dtype)} inputs"
    return reason


def cases(op: str, *, smoke_run: bool | None = None) -> list[Case]:
    op_spec = spec.get(op)
    found = []
    for v in registry.variants_of(op):
        for shape in shapes(op_spec, smoke_run=smoke_run):
            for dtype in op_spec.bench_dtypes:
                if why_not(op, v.name, shape, dtype) is None:
                    found.append(Case(op, v.name, shape, dtype, bench_mode(v, dtype)))
    return found


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


def error_ratio(case: Case, inputs: spec.Inputs, out) -> float:
    """max |out - ref| / (atol + rtol |ref|) over every output element, in float64: below 1 passes the suite."""
    op_spec = spec.get(case.op)
    outs = out if isinstance(out, tuple) else (out,)
    extra = (
        {"out": tuple(o.detach() for o in outs) if len(outs) > 1 else outs[0]} if op_spec.reference_needs_output else {}
    )
    refs = op_spec.reference(**spec.upcast(inputs), **extra)
    refs = refs if isinstance(refs, tuple) else (refs,)
    worst = 0.0
    for got, want in zip(outs, refs, strict=True):
        tol = op_spec.tolerance(got.dtype, case.dtype)
        want = want.to(torch.float64)
        ratio = (got.to(torch.float64) - want).abs_().div_(want.abs().mul_(tol.rtol).add_(tol.atol))
        value = ratio.max().item() if ratio.numel() else 0.0
        worst = max(worst, value if math.isfinite(value) else ERROR_CAP)
    return min(worst, ERROR_CAP)


def _environment() -> dict[str, str]:
    import triton

    info = {"torch": torch.__version__, "triton": triton.__version__, "backend": backend.describe()}
    if backend.name() == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = str(torch.version.cuda)
    return info


def measure(ops: list[str] | None = None, *, log: Callable[[str], None] = print) -> dict:
    """Run every case of ``ops`` (default: the selected ones) and return what the benchmarks report, by op and
    case key. Each case gets fresh seeded inputs; its outputs are checked against the reference before timing."""
    registry.discover()
    smoke_run = smoke()
    if smoke_run != backend.interpreting():
        raise RuntimeError(
            f"{SMOKE_ENV}=1 (the CPU smoke run) needs TRITON_INTERPRET=1, and timing needs a GPU without it"
        )
    if not smoke_run and backend.name() != "cuda":
        raise RuntimeError("the benchmark suite times kernels on a CUDA GPU; none is visible")
    device = backend.device()
    timer = _timer(smoke_run)
    copy_gbs = float("nan") if smoke_run else timing.copy_bandwidth_gbs()
    report = {"environment": _environment(), "copy_gbs": copy_gbs, "smoke": smoke_run, "ops": {}}
    for op in ops or selected_ops():
        report["ops"][op] = _measure_op(op, device, timer, copy_gbs, smoke_run, log)
    return report


def _measure_op(op, device, timer, copy_gbs, smoke_run, log) -> dict:
    op_spec = spec.get(op)
    roofline_ms: dict[tuple[int, ...], float] = {}
    results, skipped = {}, {}
    # Inputs are drawn once per (shape, dtype, mode) and shared by the variants: drawing them (on the CPU, so
    # that every machine sees the same numbers) costs more than timing a variant at these sizes.
    groups: dict[tuple, list[Case]] = {}
    for case in cases(op, smoke_run=smoke_run):
        groups.setdefault((case.shape, case.dtype, case.mode), []).append(case)
    for (shape, dtype, mode), group in groups.items():
        runnable = []
        for case in group:
            reason = registry.get(op, case.variant).unsupported_backend()
            if reason:
                skipped[case.key] = reason
            else:
                runnable.append(case)
        if not runnable:
            continue
        inputs = op_spec.make_inputs(shape, dtype, device, torch.Generator().manual_seed(0), mode)
        for case in runnable:
            results[case.key] = _measure_case(case, inputs, device, timer, copy_gbs, roofline_ms, smoke_run)
            log(
                f"{op} {case.key} [{case.mode}]: {results[case.key]['ms']:.4f} ms, "
                f"{results[case.key]['pct_roofline']:.1f}% of {op_spec.roofline_name}, "
                f"error {results[case.key]['error']:.3g}"
            )
        del inputs
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {
        "roofline": op_spec.roofline_name,
        "throughput_unit": "TFLOP/s" if op_spec.roofline is not None else "GB/s",
        "cases": results,
        "skipped": skipped,
    }


def _measure_case(case: Case, inputs, device, timer, copy_gbs, roofline_ms, smoke_run) -> dict:
    op_spec = spec.get(case.op)
    v = registry.get(case.op, case.variant)
    out = dispatch.allocate_poisoned(case.op, inputs)
    dispatch.run(case.op, inputs, variant=v.name, out=out)  # validates, compiles and autotunes once
    error = error_ratio(case, inputs, out)
    chosen = tuning.chosen_configs(v.module)
    # The launcher alone (stash=None: no backward follows): the entry point's checks are host time, which
    # bench-host measures.
    samples = timer(lambda: dispatch.call_forward(v, inputs, out, None))
    ms = statistics.median(samples)
    nbytes, flops = op_spec.bytes_moved(case.shape, case.dtype), op_spec.flops(case.shape)
    gbs, tflops = nbytes / (ms * 1e-3) / 1e9, flops / (ms * 1e-3) / 1e12
    if smoke_run:
        pct = float("nan")
    elif op_spec.roofline is None:
        pct = 100 * gbs / copy_gbs
    else:
        if case.shape not in roofline_ms:
            roofline_ms[case.shape] = statistics.median(timer(op_spec.roofline(case.shape, device)))
        pct = 100 * roofline_ms[case.shape] / ms
    return {
        "samples": samples,
        "ms": ms,
        "throughput": tflops if op_spec.roofline is not None else gbs,
        "pct_roofline": pct,
        "error": error,
        "mode": case.mode,
        "version": v.version,
        "fingerprint": v.fingerprint,
        "autotune": chosen,
    }


def provenance(report: dict) -> dict:
    """What a results file records beside the numbers: environment, and per op and case the variant's version,
    fingerprint, autotune choice and mode."""
    keep = ("version", "fingerprint", "autotune", "mode")
    return {
        "environment": report["environment"],
        "copy_gbs": report["copy_gbs"],
        "ops": {
            op: {
                "roofline": data["roofline"],
                "cases": {key: {k: c[k] for k in keep} for key, c in data["cases"].items()},
                "skipped": data["skipped"],
            }
            for op, data in report["ops"].items()
        },
    }
