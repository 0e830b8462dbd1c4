"""The asv suite: one class per op, generated from the registry, so a new variant file is benchmarked with no
other edit, and for an op with a backward a second class, ``<Op>Backward`` (e.g. ``SoftmaxBackward``), that times
the backward launcher of every variant that has one. Parameters are (variant, shape, dtype); each class has four
series:

- ``track_time``: every timed run in ms (asv's confidence intervals and Mann-Whitney use the samples);
- ``track_throughput``: GB/s for a memory-bound op, TFLOP/s for a compute-bound one;
- ``track_roofline``: % of the copy bandwidth (or of the vendor call, e.g. cuBLAS) measured in the same run;
- ``track_error``: worst error against the float64 reference as a fraction of the tolerance (for a backward, over
  every differentiable input's gradient against autograd of the reference).

All are measured once per run by one ``setup_cache`` (``kernels.benchsuite.measure``, both passes); a grid point
that is not a case (a dtype the variant lacks, a shape past its limits, a GPU below its compute capability, a
variant with no backward) is skipped with the reason. Run it through ``nox -s bench``, which pins the machine name
and records provenance.
"""

from __future__ import annotations

import os

from kernels import benchsuite, registry, spec
from kernels.dtypes import parse

registry.discover()

_PASSES = getattr(benchsuite, "PASSES", ("fwd",))
"""The kernels, kernels/benchsuite.py with them, are the commit's under test and this file is the checkout's: a commit
from before the backward series has no backward cases, and no ``PASSES``. Its forward classes must still run, so
they call only what every commit's benchsuite has."""

VERSION = "1"
"""Explicit and stable: editing this file or a kernel must not cut the history (asv drops results whose benchmark
version changed). Bump only when the meaning of a series changes."""
_PROVENANCE_DIR = "KERNELWATCH_BENCH_PROVENANCE"


def _measure_all(self):
    # One shared setup_cache (asv keys it by source line): the sessions limit it to the ops asked for.
    report = benchsuite.measure()
    where = os.environ.get(_PROVENANCE_DIR)
    if where:
        import json

        with open(os.path.join(where, "provenance.json"), "w") as f:
            json.dump(benchsuite.provenance(report), f, indent=1)
    return report


def _case(cache, op, direction, variant, shape, dtype):
    data = cache["ops"].get(op)
    if data is None:
        raise NotImplementedError(f"{op} was not measured in this run ({benchsuite.OPS_ENV})")
    if direction == "bwd":
        data = data["backward"]
    key = benchsuite.case_key(variant, shape, dtype)
    if key in data["cases"]:
        return data["cases"][key]
    raise NotImplementedError(data["skipped"].get(key, f"{op} {direction} {key} is not a case"))


def _series(op: str, direction: str, field: str, unit: str, doc: str):
    def track(self, cache, variant, shape, dtype):
        case = _case(cache, op, direction, variant, shape, dtype)
        return {"samples": case["samples"], "number": 1} if field == "samples" else case[field]

    track.unit = unit
    track.__doc__ = doc
    return track


def _op_class(op: str, direction: str = "fwd") -> type:
    op_spec = spec.get(op)
    variants, shapes, dtypes = benchsuite.params(op)

    def setup(self, cache, variant, shape, dtype):
        dims = tuple(int(d) for d in shape.split("x"))
        if direction == "fwd":
            reason = benchsuite.why_not(op, variant, dims, parse(dtype))
        else:
            reason = benchsuite.why_not(op, variant, dims, parse(dtype), direction)
        if reason:
            raise NotImplementedError(reason)
        _case(cache, op, direction, variant, shape, dtype)

    throughput = "TFLOP/s" if op_spec.roofline is not None else "GB/s"
    roofline = op_spec.roofline_name if direction == "fwd" else benchsuite.roofline_name(op_spec, direction)
    # The forward texts are the ones the history was recorded with.
    if direction == "fwd":
        title, what, model = op, "forward time per call", "the op's model"
        error = "max |out - ref| / (atol + rtol |ref|) against float64"
    else:
        title, what, model = f"{op} backward", "backward time per call, launcher alone", "the op's backward model"
        error = "max |grad - ref| / (atol + rtol |ref|) over the input gradients, against autograd in float64"
    body = {
        "__doc__": f"{title}: {op_spec.signature}",
        "params": [variants, shapes, dtypes],
        "param_names": ["variant", "shape", "dtype"],
        "version": VERSION,
        "timeout": 600,
        "setup_cache_timeout": 7200,
        "setup_cache": _measure_all,
        "setup": setup,
        "track_time": _series(op, direction, "samples", "ms", f"{op}: {what} (CUDA events, L2 flushed)"),
        "track_throughput": _series(op, direction, "throughput", throughput, f"{op}: achieved {throughput} ({model})"),
        "track_roofline": _series(
            op, direction, "pct_roofline", f"% of {roofline}", f"{op}: % of {roofline}, same run"
        ),
        "track_error": _series(op, direction, "error", "error / tolerance", f"{op}: {error}"),
    }
    return type(class_name(op) if direction == "fwd" else backward_class_name(op), (), body)


def class_name(op: str) -> str:
    return "".join(part.capitalize() for part in op.split("_"))


def backward_class_name(op: str) -> str:
    return class_name(op) + "Backward"


for _op in sorted(spec.OPS):
    if registry.variants_of(_op):
        globals()[class_name(_op)] = _op_class(_op)
for _op in sorted(spec.OPS):
    if "bwd" in _PASSES and registry.variants_of(_op) and spec.get(_op).has_backward:
        # A backward class must never take a forward class's name (asv keys the history by it).
        if backward_class_name(_op) in globals():
            raise RuntimeError(f"{backward_class_name(_op)} is already a benchmark class: rename the op")
        globals()[backward_class_name(_op)] = _op_class(_op, "bwd")
