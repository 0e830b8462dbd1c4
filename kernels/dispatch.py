"""The path every public op call takes: checks, zero-size inputs, autograd, then the variant's launcher."""

from __future__ import annotations

from typing import NamedTuple

import torch

from kernels import backend, cases, memory, registry, spec, usage
from kernels.errors import KernelInputError, UnsupportedError

INT32_MAX = 2**31 - 1


def _span(t: torch.Tensor) -> int:
    """One past the largest element offset a kernel can form for ``t`` (what 32-bit offsets must reach)."""
    if t.numel() == 0:
        return 0
    return 1 + sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride(), strict=True))


def check_devices(op: str, inputs: spec.Inputs) -> torch.device:
    tensors = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise KernelInputError(f"{op}: no tensor inputs")
    devices = {k: v.device for k, v in tensors.items()}
    first_name, first = next(iter(devices.items()))
    for name, dev in devices.items():
        if dev != first:
            raise KernelInputError(f"{op}: inputs are on different devices: {first_name} on {first}, {name} on {dev}")
    where = backend.name()
    if where == "interpreter" and first.type != "cpu":
        raise KernelInputError(
            f"{op}: TRITON_INTERPRET=1 runs kernels on the CPU, but {first_name} is on {first}; move it to the CPU"
        )
    if where == "cuda" and first.type != "cuda":
        raise KernelInputError(
            f"{op}: {first_name} is on {first}; Triton kernels need CUDA tensors "
            "(or set TRITON_INTERPRET=1 to run them on the CPU through the interpreter)"
        )
    return first


def check_index_range(op: str, tensors: dict[str, torch.Tensor]) -> None:
    for name, t in tensors.items():
        if _span(t) > INT32_MAX:
            raise KernelInputError(
                f"{op}: {name} with shape {tuple(t.shape)} and strides {t.stride()} spans {_span(t)} elements, "
                f"more than the {INT32_MAX} that 32-bit kernel indexing can address; split the problem"
            )


def as_tuple(out) -> tuple[torch.Tensor, ...]:
    """An op's outputs as a tuple, whether it has one output (a tensor) or several."""
    return out if isinstance(out, tuple) else (out,)


def _like(template, tensors: tuple[torch.Tensor, ...]):
    """``tensors`` shaped like ``template``: one tensor for a single-output op, a tuple otherwise."""
    return tensors if isinstance(template, tuple) else tensors[0]


def _same_strides(o: torch.Tensor, e: torch.Tensor) -> bool:
    """``o`` is laid out like ``e``: equal strides in every dimension of size > 1 (what ``is_contiguous`` checks)."""
    return o.numel() == 0 or all(
        so == se for size, so, se in zip(o.shape, o.stride(), e.stride(), strict=True) if size > 1
    )


def check_out(op: str, out, expected, device: torch.device) -> None:
    """``out`` (a tensor, or a tuple for ops with several outputs) must match the expected outputs exactly."""
    if isinstance(expected, tuple) != isinstance(out, tuple) or len(as_tuple(out)) != len(as_tuple(expected)):
        raise KernelInputError(f"{op}: out must be {len(as_tuple(expected))} tensor(s) like the op's outputs")
    for i, (o, e) in enumerate(zip(as_tuple(out), as_tuple(expected), strict=True)):
        name = "out" if not isinstance(out, tuple) else f"out[{i}]"
        if not isinstance(o, torch.Tensor):
            raise KernelInputError(f"{op}: {name} must be a tensor, got {type(o).__name__}")
        if o.shape != e.shape or o.dtype != e.dtype or o.device != device:
            raise KernelInputError(
                f"{op}: {name} has shape {tuple(o.shape)}, dtype {o.dtype}, device {o.device}; expected "
                f"shape {tuple(e.shape)}, dtype {e.dtype}, device {device}"
            )
        if not _same_strides(o, e):
            # The expected output is contiguous for most ops; conv2d's follows x's memory format (channels-last).
            want = "be contiguous" if e.is_contiguous() else f"have the op's output strides {e.stride()}"
            raise KernelInputError(f"{op}: {name} must {want}, got strides {o.stride()}")


def call_forward(variant, inputs, out, stash):
    """The variant's launcher alone; ``stash`` is a dict when a backward will follow, None otherwise."""
    usage.used(variant)  # what tests/ledger.py keys the running test on
    return (
        variant.forward(**inputs, out=out, stash=stash) if variant.wants_stash else variant.forward(**inputs, out=out)
    )


class _Autograd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, variant, names, options, out_box, *tensors):
        inputs = dict(zip(names, tensors, strict=True)) | options
        stash: dict = {}
        result = call_forward(variant, inputs, out_box[0], stash)
        ctx.variant, ctx.names, ctx.options, ctx.stash = variant, names, options, stash
        ctx.multi = isinstance(result, tuple)
        results = as_tuple(result)
        # Only what the backward reads stays alive until backward (Variant.backward_reads): a fused cross-entropy
        # that wrote its gradient in the forward pass need not also keep the logits. Of the rest, the metadata.
        reads = variant.backward_reads
        every = (*tensors, *results)
        ctx.absent = {
            i: _Absent(t.shape, t.dtype, t.device)
            for i, (n, t) in enumerate(zip((*names, *("out",) * len(results)), every, strict=True))
            if reads is not None and n not in reads
        }
        ctx.save_for_backward(*(None if i in ctx.absent else t for i, t in enumerate(every)))
        return result

    @staticmethod
    def backward(ctx, *grad_outs):
        saved = [ctx.absent[i].stand_in() if i in ctx.absent else t for i, t in enumerate(ctx.saved_tensors)]
        tensors, results = saved[: len(ctx.names)], saved[len(ctx.names) :]
        inputs = dict(zip(ctx.names, tensors, strict=True)) | ctx.options
        # An output the caller never used arrives as None: its gradient is zero.
        grads_out = tuple(
            torch.zeros_like(r) if g is None else g.contiguous() for g, r in zip(grad_outs, results, strict=True)
        )
        if ctx.variant.wants_stash:
            inputs = inputs | {"stash": ctx.stash}
        out = results if ctx.multi else results[0]
        grad_out = grads_out if ctx.multi else grads_out[0]
        grads = ctx.variant.backward(inputs, out, grad_out)
        return (
            None,
            None,
            None,
            None,
            *(grads.get(n) if ctx.needs_input_grad[4 + i] else None for i, n in enumerate(ctx.names)),
        )


class _Absent(NamedTuple):
    """A tensor autograd did not keep because the backward does not read its values: its metadata alone."""

    shape: torch.Size
    dtype: torch.dtype
    device: torch.device

    def stand_in(self) -> torch.Tensor:
        """One element broadcast to the tensor's shape, dtype and device, made only when backward runs: enough for a
        backward that reads the metadata (``memory.empty_like``)."""
        return torch.empty((), dtype=self.dtype, device=self.device).expand(self.shape)


def meta_inputs(inputs: spec.Inputs) -> spec.Inputs:
    """``inputs`` with each tensor replaced by a meta tensor of its shape, strides and dtype: what an op spec's
    ``make_output`` needs to describe the outputs without allocating them."""
    return {
        k: torch.empty_strided(v.shape, v.stride(), dtype=v.dtype, device="meta") if isinstance(v, torch.Tensor) else v
        for k, v in inputs.items()
    }


def run(op: str, inputs: spec.Inputs, *, variant: str | None = None, out=None):
    op_spec = spec.get(op)
    chosen = registry.get(op, variant)
    usage.used(chosen)
    device = check_devices(op, inputs)
    op_spec.validate(inputs)
    tensors = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    wants_grad = False
    if torch.is_grad_enabled():
        for name, t in tensors.items():
            if t.requires_grad and name not in op_spec.grad_inputs:
                raise KernelInputError(
                    f"{op}: {name} requires grad, but {op} has no gradient with respect to {name}; detach it"
                )
        wants_grad = any(tensors[n].requires_grad for n in op_spec.grad_inputs if n in tensors)
    shape = tuple(op_spec.problem_shape(inputs))
    # A call autograd records is a backward case: the variant must have a backward as well as take these inputs.
    # Asked before anything is allocated, of the same rule the tests and benchmarks enumerate their cases by.
    case = cases.Case(
        chosen, op_spec.operand_dtype(inputs), shape, op_spec.mode_of(inputs), "bwd" if wants_grad else "fwd"
    )
    reason = cases.support(case)
    if reason:
        raise UnsupportedError(f"{op}: {reason}")
    # Size the outputs on the meta device first: an output too large to index is refused before it is allocated.
    meta_out = op_spec.make_output(meta_inputs(inputs))
    names = ["out"] if not isinstance(meta_out, tuple) else [f"out[{i}]" for i in range(len(meta_out))]
    check_index_range(op, dict(zip(names, as_tuple(meta_out), strict=True)))
    if out is not None:
        check_out(op, out, meta_out, device)
    else:
        out = op_spec.make_output(inputs)
    if 0 in shape:
        # Nothing to launch: the reference, on the inputs as given, is exact for an empty problem and keeps
        # autograd connected.
        extra = {"out": out} if op_spec.reference_needs_output else {}
        ref = op_spec.reference(**spec.upcast(inputs, keep_grad=True), **extra)
        results = tuple(r.to(o.dtype) for r, o in zip(as_tuple(ref), as_tuple(out), strict=True))
        if wants_grad:
            return _like(out, results)
        return _like(out, tuple(o.copy_(r) for o, r in zip(as_tuple(out), results, strict=True)))
    check_index_range(op, tensors)
    if not wants_grad:
        # stash=None tells a launcher that no backward will follow, so it can skip work only backward needs.
        return call_forward(chosen, inputs, out, None)
    names = tuple(tensors)
    options = {k: v for k, v in inputs.items() if k not in tensors}
    return _Autograd.apply(chosen, names, options, [out], *tensors.values())


def allocate_poisoned(op: str, inputs: spec.Inputs):
    """Outputs for ``inputs`` filled with NaN, for the correctness suite."""
    out = spec.get(op).make_output(inputs)
    for o in as_tuple(out):
        memory.poison_(o)
    return out
