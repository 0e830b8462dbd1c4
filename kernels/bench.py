"""``python -m kernels bench OP``: every variant of an op beside its peers, at the op's GPU shapes.

One row per (shape, variant or peer): the median time, the achieved GB/s and TFLOP/s from the op's byte and FLOP
models, the % of the device-to-device copy bandwidth measured in the same run, and the speedup over eager.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from kernels import backend, dispatch, registry, spec, timing
from kernels.dtypes import parse, short


@dataclass
class Row:
    op: str
    shape: tuple[int, ...]
    dtype: str
    mode: str
    name: str
    kind: str  # "variant" or "peer"
    version: str
    fingerprint: str
    ms: float
    gbs: float
    tflops: float
    pct_copy: float
    vs_eager: float | None


def default_peers(op_spec: spec.OpSpec) -> dict[str, Callable[[], Callable | None]]:
    peers = dict(op_spec.peers)
    peers.setdefault("eager", lambda: op_spec.reference)
    peers.setdefault("torch.compile", lambda: torch.compile(op_spec.reference, dynamic=False))
    return peers


def _call_peer(fn: Callable, inputs: spec.Inputs) -> Callable[[], object]:
    return lambda: fn(**inputs)


def run(
    op: str,
    *,
    variants: list[str] | None = None,
    shapes: list[tuple[int, ...]] | None = None,
    dtype: str | torch.dtype | None = None,
    mode: str | None = None,
    peers: list[str] | None = None,
    timer: Callable[[Callable[[], object]], list[float]] = timing.samples_ms,
    copy_gbs: float | None = None,
) -> list[Row]:
    """Time the variants and peers of ``op``. ``timer`` returns samples in ms (tests pass a fake one)."""
    op_spec = spec.get(op)
    chosen = [registry.get(op, name) for name in variants] if variants else registry.variants_of(op)
    dtype = parse(dtype) if dtype is not None else _default_dtype(chosen)
    mode = mode or op_spec.modes[0]
    if not op_spec.mode_allows(mode, dtype):
        raise ValueError(f"{op}: mode {mode!r} does not take dtype {dtype}")
    peer_table = default_peers(op_spec)
    wanted = peers if peers is not None else list(peer_table)
    unknown = set(wanted) - set(peer_table)
    if unknown:
        raise ValueError(f"{op}: unknown peers {sorted(unknown)}; declared: {sorted(peer_table)}")
    peer_fns = {name: fn for name in wanted if (fn := peer_table[name]()) is not None}
    if copy_gbs is None:
        copy_gbs = timing.copy_bandwidth_gbs(timer=timer)
    device = backend.device()
    rows: list[Row] = []
    for shape in shapes or op_spec.gpu_shapes:
        inputs = op_spec.make_inputs(tuple(shape), dtype, device, torch.Generator().manual_seed(0), mode)
        nbytes, flops = op_spec.bytes_moved(tuple(shape), dtype), op_spec.flops(tuple(shape))
        timed: list[tuple[str, str, str, str, float]] = []
        for v in chosen:
            if v.unsupported_backend() or v.unsupported_dtype(dtype) or v.unsupported_shape(tuple(shape)):
                continue
            if mode not in v.modes:
                continue
            out = op_spec.make_output(inputs)
            dispatch.run(op, inputs, variant=v.name, out=out)  # validates once, compiles, autotunes
            # Timed through the launcher alone: the entry point's checks are host time, which bench-host measures.
            ms = statistics.median(
                timer(lambda v=v, out=out, inputs=inputs: dispatch.call_forward(v, inputs, out, None))
            )
            timed.append((v.name, "variant", v.version, v.fingerprint, ms))
        for name, fn in peer_fns.items():
            try:
                ms = statistics.median(timer(_call_peer(fn, inputs)))
            except Exception as exc:
                # A peer's own limits (e.g. Liger refuses rows past 65536 columns) leave a gap in its row, not a
                # failed run: the variants are what this command measures.
                print(f"peer {name} cannot run {op} {shape}: {type(exc).__name__}: {exc}", file=sys.stderr)
                continue
            timed.append((name, "peer", "", "", ms))
        eager = next((ms for name, kind, *_, ms in timed if name == "eager" and kind == "peer"), None)
        for name, kind, version, fingerprint, ms in timed:
            gbs = nbytes / (ms * 1e-3) / 1e9
            rows.append(
                Row(
                    op=op,
                    shape=tuple(shape),
                    dtype=short(dtype),
                    mode=mode,
                    name=name,
                    kind=kind,
                    version=version,
                    fingerprint=fingerprint,
                    ms=ms,
                    gbs=gbs,
                    tflops=flops / (ms * 1e-3) / 1e12,
                    pct_copy=100 * gbs / copy_gbs,
                    vs_eager=eager / ms if eager else None,
                )
            )
    return rows


def _default_dtype(variants) -> torch.dtype:
    for candidate in (torch.bfloat16, *(d for v in variants for d in v.dtypes)):
        if any(candidate in v.dtypes for v in variants):
            return candidate
    raise ValueError("no variant declares a dtype")


def format_table(rows: list[Row], copy_gbs: float) -> str:
    headers = ["shape", "dtype", "name", "version", "ms", "GB/s", "TFLOP/s", "% copy", "x eager"]
    body = [
        [
            "x".join(map(str, r.shape)),
            r.dtype,
            r.name if r.kind == "variant" else f"[{r.name}]",
            r.version,
            f"{r.ms:.4f}",
            f"{r.gbs:.0f}",
            f"{r.tflops:.1f}",
            f"{r.pct_copy:.1f}",
            f"{r.vs_eager:.2f}" if r.vs_eager else "",
        ]
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(headers, *body, strict=True)]
    lines = [f"copy bandwidth measured in this run: {copy_gbs:.0f} GB/s; {backend.describe()}"]
    lines.append("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in body]
    return "\n".join(lines)


def plot(rows: list[Row], path: str) -> None:
    """Throughput against problem size, one line per variant or peer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    memory_bound = all(r.tflops < 50 for r in rows)
    fig, ax = plt.subplots(figsize=(8, 5))
    for name in dict.fromkeys(r.name for r in rows):
        mine = [r for r in rows if r.name == name]
        sizes = [spec.get(r.op).bytes_moved(r.shape, parse(r.dtype)) for r in mine]
        ax.plot(sizes, [r.gbs if memory_bound else r.tflops for r in mine], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("bytes moved (model)")
    ax.set_ylabel("GB/s" if memory_bound else "TFLOP/s")
    ax.set_title(f"{rows[0].op} ({rows[0].dtype}) — {backend.describe()}", fontsize=8)
    ax.legend()
    fig.savefig(path, dpi=120, bbox_inches="tight")


def to_json(rows: list[Row], copy_gbs: float) -> str:
    import triton

    return json.dumps(
        {
            "device": backend.describe(),
            "torch": torch.__version__,
            "triton": triton.__version__,
            "copy_gbs": copy_gbs,
            "rows": [asdict(r) for r in rows],
        },
        indent=2,
    )
