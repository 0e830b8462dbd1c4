"""The asv suite: one class per op, generated from the registry, so a new variant file is benchmarked with no
other edit. Parameters are (variant, shape, dtype); each class has four series:

- ``track_time``: every timed run in ms (asv's confidence intervals and Mann-Whitney use the samples);
- ``track_throughput``: GB/s for a memory-bound op, TFLOP/s for a compute-bound one;
- ``track_roofline``: % of the copy bandwidth (or of the vendor call, e.g. cuBLAS) measured in the same run;
- ``track_error``: worst error against the float64 reference as a fraction of the tolerance.

All are measured once per run by ``setup_cache`` (``kernels.benchsuite.measure``); a grid point that is not a case
(a dtype the variant lacks, a shape past its limits, a GPU below its compute capability) is skipped with the
reason. Run it through ``nox -s bench``, which pins the machine name and records provenance.
"""

from __future__ import annotations

import os

from kernels import benchsuite, registry, spec
from kernels.dtypes import parse

registry.discover()

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


def _case(cache, op, variant, shape, dtype):
    data = cache["ops"].get(op)
    if data is None:
        raise NotImplementedError(f"{op} was not measured in this run ({benchsuite.OPS_ENV})")
    key = benchsuite.case_key(variant, shape, dtype)
    if key in data["cases"]:
        return data["cases"][key]
    raise NotImplementedError(data["skipped"].get(key, f"{op} {key} is not a case"))


def _series(op: str, field: str, unit: str, doc: str):
    def track(self, cache, variant, shape, dtype):
        case = _case(cache, op, variant, shape, dtype)
        return {"samples": case["samples"], "number": 1} if field == "samples" else case[field]

    track.unit = unit
    track.__doc__ = doc
    return track


def _op_class(op: str) -> type:
    op_spec = spec.get(op)
    variants, shapes, dtypes = benchsuite.params(op)

    def setup(self, cache, variant, shape, dtype):
        dims = tuple(int(d) for d in shape.split("x"))
        reason = benchsuite.why_not(op, variant, dims, parse(dtype))
        if reason:
            raise NotImplementedError(reason)
        _case(cache, op, variant, shape, dtype)

    throughput = "TFLOP/s" if op_spec.roofline is not None else "GB/s"
    body = {
        "__doc__": f"{op}: {op_spec.signature}",
        "params": [variants, shapes, dtypes],
        "param_names": ["variant", "shape", "dtype"],
        "version": VERSION,
        "timeout": 600,
        "setup_cache_timeout": 7200,
        "setup_cache": _measure_all,
        "setup": setup,
        "track_time": _series(op, "samples", "ms", f"{op}: forward time per call (CUDA events, L2 flushed)"),
        "track_throughput": _series(op, "throughput", throughput, f"{op}: achieved {throughput} (the op's model)"),
        "track_roofline": _series(
            op, "pct_roofline", f"% of {op_spec.roofline_name}", f"{op}: % of {op_spec.roofline_name}, same run"
        ),
        "track_error": _series(
            op, "error", "error / tolerance", f"{op}: max |out - ref| / (atol + rtol |ref|) against float64"
        ),
    }
    return type(class_name(op), (), body)


def class_name(op: str) -> str:
    return "".join(part.capitalize() for part in op.split("_"))


for _op in sorted(spec.OPS):
    if registry.variants_of(_op):
        globals()[class_name(_op)] = _op_class(_op)
