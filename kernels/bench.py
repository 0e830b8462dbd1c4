"""``python -m kernels bench OP``: every variant of an op beside its peers, at the op's GPU shapes.

One row per (shape, variant or peer): the median time, the achieved GB/s and TFLOP/s from the op's byte and FLOP
models, the % of the device-to-device copy bandwidth measured in the same run, and the speedup over eager.

``--pass`` picks what is timed: the forward (``fwd``), the backward alone (``bwd``: the forward runs once, untimed,
and its output and saved state feed every timed backward), or both in turn (``fwd+bwd``, a training step's share).
Variants are timed through their launchers (``Variant.forward`` and ``Variant.backward``), peers through their
public function and ``torch.autograd.grad``, so both pay for the gradients they allocate.
"""

from __future__ import annotations

import functools
import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from kernels import backend, cases, dispatch, gradients, memory, registry, spec, timing
from kernels.dtypes import parse, short


@dataclass
class Row:
    op: str
    shape: tuple[int, ...]
    dtype: str
    mode: str
    direction: str  # one of PASSES
    name: str
    kind: str  # "variant" or "peer"
    version: str
    fingerprint: str
    ms: float
    nbytes: int
    """The byte model's count for this pass, from which ``gbs`` comes."""
    gbs: float
    tflops: float
    pct_copy: float
    vs_eager: float | None
    pct_copy_at_size: float | None = None
    """Against a copy that moves the same bytes (``nbytes``), timed the same way in the same run. At the sizes of
    issue 5's shapes (64 MB to a few hundred) a copy does not reach the 1 GiB copy figure that ``pct_copy`` uses:
    the launch and the tail weigh more, and do_bench's L2 flush leaves dirty lines that the timed run writes back."""


PASSES = ("fwd", "bwd", "fwd+bwd")


def model(op_spec: spec.OpSpec, direction: str, inputs: spec.Inputs, out) -> tuple[int, int]:
    """(bytes, FLOPs) a pass must move and compute, from the op's models (see ``OpSpec.backward_bytes``)."""
    shape = op_spec.problem_shape(inputs)
    dtype = op_spec.operand_dtype(inputs)
    fwd_bytes = op_spec.forward_bytes(inputs) if op_spec.forward_bytes else op_spec.bytes_moved(shape, dtype)
    fwd = (fwd_bytes, op_spec.flops(shape))
    if direction == "fwd":
        return fwd
    bwd_flops = op_spec.backward_flops(shape) if op_spec.backward_flops else 2 * fwd[1]
    if op_spec.backward_bytes:
        bwd_bytes = op_spec.backward_bytes(inputs)
    else:
        grads = [inputs[n] for n in gradients.differentiable(op_spec, inputs)]
        bwd_bytes = sum(spec.nbytes(o) for o in dispatch.as_tuple(out)) + 2 * sum(spec.nbytes(t) for t in grads)
    if direction == "bwd":
        return bwd_bytes, bwd_flops
    both = op_spec.forward_backward_bytes(inputs) if op_spec.forward_backward_bytes else fwd[0] + bwd_bytes
    return both, fwd[1] + bwd_flops


def make_grad_out(op_spec: spec.OpSpec, out, shape, generator: torch.Generator, device):
    """The output gradient a training step would see, for outputs shaped like ``out``: 1 for a 0-dim output (a
    loss, as ``loss.backward()`` seeds it), otherwise random (never zeros) and scaled as the backward tests scale
    it."""
    grads = tuple(
        torch.ones((), dtype=o.dtype, device=device)
        if o.dim() == 0
        else spec.randn(tuple(o.shape), o.dtype, device, generator, scale=op_spec.grad_scale(shape))
        for o in dispatch.as_tuple(out)
    )
    return grads if isinstance(out, tuple) else grads[0]


def variant_call(v, op_spec: spec.OpSpec, direction: str, inputs: spec.Inputs, grad_out, out=None):
    """What to time for a variant in this pass: its launchers alone, the entry point's checks left out. For "bwd"
    the forward runs once here, into ``out`` (made here unless given: the asv suite passes its own, to check the
    gradient against a reference that reads the forward's output), and every call is one backward from its stash,
    returning the gradients by input name."""
    out = op_spec.make_output(inputs) if out is None else out
    if direction == "fwd":
        return lambda: dispatch.call_forward(v, inputs, out, None)

    # The launchers see what autograd hands them in a training step: every differentiable input requiring grad (a
    # backward computes only the gradients asked for: conv2d's skips dx for an x that needs none), with grad mode
    # off, as inside an autograd.Function.
    leaves = inputs | {n: inputs[n].detach().requires_grad_() for n in gradients.differentiable(op_spec, inputs)}

    def with_stash(stash):
        return leaves | {"stash": stash} if v.wants_stash else leaves

    stash: dict = {}
    with torch.no_grad():
        dispatch.call_forward(v, leaves, out, stash)
    if direction == "bwd":

        def backward():
            with torch.no_grad():
                return v.backward(with_stash(stash), out, grad_out)

        return backward

    def forward_backward():
        with torch.no_grad():
            step: dict = {}
            dispatch.call_forward(v, leaves, out, step)
            return v.backward(with_stash(step), out, grad_out)

    return forward_backward


def _peer_call(fn: Callable, op_spec: spec.OpSpec, direction: str, inputs: spec.Inputs, grad_out):
    """What to time for a peer in this pass: its public function, and autograd for the gradients."""
    if direction == "fwd":
        return lambda: fn(**inputs)
    leaves = {n: inputs[n].detach().requires_grad_() for n in gradients.differentiable(op_spec, inputs)}
    with_grad = inputs | leaves
    grads = dispatch.as_tuple(grad_out)
    if direction == "bwd":
        outs = dispatch.as_tuple(fn(**with_grad))
        return lambda: torch.autograd.grad(outs, tuple(leaves.values()), grads, retain_graph=True, allow_unused=True)

    # allow_unused: a peer may not read every differentiable input of the op (the SDPA peer of
    # windowed_rope_attention reads q1, k1 and v, not q2 and k2); it is timed for the gradients it does produce.
    def forward_backward():
        return torch.autograd.grad(dispatch.as_tuple(fn(**with_grad)), tuple(leaves.values()), grads, allow_unused=True)

    return forward_backward


def default_peers(op_spec: spec.OpSpec) -> dict[str, Callable[[], Callable | None]]:
    peers = dict(op_spec.peers)
    peers.setdefault("eager", lambda: op_spec.reference)
    peers.setdefault("torch.compile", lambda: torch.compile(op_spec.reference, dynamic=False))
    return peers


def run(
    op: str,
    *,
    variants: list[str] | None = None,
    shapes: list[tuple[int, ...]] | None = None,
    dtype: str | torch.dtype | None = None,
    mode: str | None = None,
    peers: list[str] | None = None,
    direction: str = "fwd",
    timer: Callable[[Callable[[], object]], list[float]] = timing.samples_ms,
    copy_gbs: float | None = None,
    copy_gbs_at: Callable[[int], float | None] | None = None,
) -> list[Row]:
    """Time the variants and peers of ``op`` in one pass (``PASSES``). ``timer`` returns samples in ms (tests pass
    a fake one). ``copy_gbs`` is the 1 GiB copy figure (measured here if not given); ``copy_gbs_at(nbytes)`` the
    bandwidth of a copy of ``nbytes`` (by default measured once per shape on a GPU; None leaves the column empty)."""
    op_spec = spec.get(op)
    if direction not in PASSES:
        raise ValueError(f"{op}: unknown pass {direction!r}; choose one of {', '.join(PASSES)}")
    if direction != "fwd" and not op_spec.has_backward:
        raise ValueError(f"{op}: the op has no backward, so only the forward pass ('fwd') can be timed")
    chosen = [registry.get(op, name) for name in variants] if variants else registry.variants_of(op)
    dtype = parse(dtype) if dtype is not None else _default_dtype(chosen)
    mode = mode or op_spec.modes[0]
    # A request no variant could ever run is refused outright, rather than printing a table with no variant in it.
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
    if copy_gbs_at is None and backend.name() == "cuda":
        copy_gbs_at = functools.partial(_copy_gbs_at, timer=timer)
    device = backend.device()
    rows: list[Row] = []
    left_out: set[str] = set()
    for shape in shapes or op_spec.gpu_shapes:
        generator = torch.Generator().manual_seed(0)
        inputs = op_spec.make_inputs(tuple(shape), dtype, device, generator, mode)
        meta_out = op_spec.make_output(dispatch.meta_inputs(inputs))
        nbytes, flops = model(op_spec, direction, inputs, meta_out)
        # One output gradient per shape, drawn after the inputs, for every variant and peer alike.
        grad_out = None if direction == "fwd" else make_grad_out(op_spec, meta_out, tuple(shape), generator, device)
        timed: list[tuple[str, str, str, str, float]] = []
        for v in chosen:
            # "fwd+bwd" needs what "bwd" needs: a variant with a backward.
            reason = cases.support(cases.Case(v, dtype, tuple(shape), mode, "fwd" if direction == "fwd" else "bwd"))
            if reason:
                if reason not in left_out:  # once per run: most reasons hold at every shape
                    print(f"{reason}; left out of the {direction} rows", file=sys.stderr)
                    left_out.add(reason)
                continue
            dispatch.run(op, inputs, variant=v.name, out=op_spec.make_output(inputs))  # validates, compiles, tunes
            call = variant_call(v, op_spec, direction, inputs, grad_out)
            ms = statistics.median(timer(call))
            timed.append((v.name, "variant", v.version, v.fingerprint, ms))
        for name, fn in peer_fns.items():
            try:
                ms = statistics.median(timer(_peer_call(fn, op_spec, direction, inputs, grad_out)))
            except Exception as exc:
                # A peer's own limits (e.g. Liger refuses rows past 65536 columns) leave a gap in its row, not a
                # failed run: the variants are what this command measures.
                print(f"peer {name} cannot run {op} {shape}: {type(exc).__name__}: {exc}", file=sys.stderr)
                continue
            timed.append((name, "peer", "", "", ms))
        eager = next((ms for name, kind, *_, ms in timed if name == "eager" and kind == "peer"), None)
        copy_here = copy_gbs_at(nbytes) if copy_gbs_at is not None and timed else None
        for name, kind, version, fingerprint, ms in timed:
            gbs = nbytes / (ms * 1e-3) / 1e9
            rows.append(
                Row(
                    op=op,
                    shape=tuple(shape),
                    dtype=short(dtype),
                    mode=mode,
                    direction=direction,
                    name=name,
                    kind=kind,
                    version=version,
                    fingerprint=fingerprint,
                    ms=ms,
                    nbytes=nbytes,
                    gbs=gbs,
                    tflops=flops / (ms * 1e-3) / 1e12,
                    pct_copy=100 * gbs / copy_gbs,
                    vs_eager=eager / ms if eager else None,
                    pct_copy_at_size=100 * gbs / copy_here if copy_here else None,
                )
            )
    return rows


def _copy_gbs_at(nbytes: int, *, timer) -> float | None:
    """A copy that moves ``nbytes`` (half read, half written), or None where two such buffers do not fit beside
    the op's tensors."""
    try:
        return timing.copy_bandwidth_gbs(max(nbytes, 2), timer=timer)
    except torch.OutOfMemoryError:
        print(f"no room for a {nbytes}-byte copy: % copy@size left empty", file=sys.stderr)
        return None
    finally:
        memory.release("cuda")


def _default_dtype(variants) -> torch.dtype:
    for candidate in (torch.bfloat16, *(d for v in variants for d in v.dtypes)):
        if any(candidate in v.dtypes for v in variants):
            return candidate
    raise ValueError("no variant declares a dtype")


def format_table(rows: list[Row], copy_gbs: float) -> str:
    headers = ["shape", "dtype", "pass", "name", "version", "ms", "GB/s", "TFLOP/s", "% copy", "% copy@size", "x eager"]
    body = [
        [
            "x".join(map(str, r.shape)),
            r.dtype,
            r.direction,
            r.name if r.kind == "variant" else f"[{r.name}]",
            r.version,
            f"{r.ms:.4f}",
            f"{r.gbs:.0f}",
            f"{r.tflops:.1f}",
            f"{r.pct_copy:.1f}",
            f"{r.pct_copy_at_size:.1f}" if r.pct_copy_at_size is not None else "",
            f"{r.vs_eager:.2f}" if r.vs_eager else "",
        ]
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(headers, *body, strict=True)]
    lines = [
        f"copy bandwidth measured in this run: {copy_gbs:.0f} GB/s (1 GiB; '% copy@size': a copy of the row's own "
        f"bytes); {backend.describe()}"
    ]
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
        ax.plot([r.nbytes for r in mine], [r.gbs if memory_bound else r.tflops for r in mine], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("bytes moved (model)")
    ax.set_ylabel("GB/s" if memory_bound else "TFLOP/s")
    ax.set_title(f"{rows[0].op} {rows[0].direction} ({rows[0].dtype}) — {backend.describe()}", fontsize=8)
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
