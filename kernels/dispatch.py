"""The path every public op call takes: checks, zero-size inputs, autograd, then the variant's launcher."""

from __future__ import annotations

import torch

from kernels import backend, memory, registry, spec
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


def check_out(op: str, out: torch.Tensor, shape: torch.Size, dtype: torch.dtype, device: torch.device) -> None:
    if not isinstance(out, torch.Tensor):
        raise KernelInputError(f"{op}: out must be a tensor, got {type(out).__name__}")
    if out.shape != shape or out.dtype != dtype or out.device != device:
        raise KernelInputError(
            f"{op}: out has shape {tuple(out.shape)}, dtype {out.dtype}, device {out.device}; expected "
            f"shape {tuple(shape)}, dtype {dtype}, device {device}"
        )
    if not out.is_contiguous():
        raise KernelInputError(f"{op}: out must be contiguous, got strides {out.stride()}")


class _Autograd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, variant, names, options, out_box, *tensors):
        inputs = dict(zip(names, tensors, strict=True)) | options
        result = variant.forward(**inputs, out=out_box[0])
        ctx.variant, ctx.names, ctx.options = variant, names, options
        ctx.save_for_backward(*tensors, result)
        return result

    @staticmethod
    def backward(ctx, grad_out):
        *tensors, result = ctx.saved_tensors
        inputs = dict(zip(ctx.names, tensors, strict=True)) | ctx.options
        grads = ctx.variant.backward(inputs, result, grad_out.contiguous())
        return (
            None,
            None,
            None,
            None,
            *(grads.get(n) if ctx.needs_input_grad[4 + i] else None for i, n in enumerate(ctx.names)),
        )


def run(op: str, inputs: spec.Inputs, *, variant: str | None = None, out: torch.Tensor | None = None):
    op_spec = spec.get(op)
    chosen = registry.get(op, variant)
    device = check_devices(op, inputs)
    op_spec.validate(inputs)
    shape = op_spec.problem_shape(inputs)
    dtype = op_spec.operand_dtype(inputs)
    reason = chosen.unsupported_backend() or chosen.unsupported_dtype(dtype)
    mode = op_spec.mode_of(inputs)
    if not reason and mode not in chosen.modes:
        able = [v.name for v in registry.variants_of(op) if mode in v.modes]
        reason = f"{chosen.key} does not take {mode!r} inputs; variants that do: {', '.join(able) or 'none'}"
    if reason:
        raise UnsupportedError(f"{op}: {reason}")
    # Size the output on the meta device first: an output too large to index is refused before it is allocated.
    meta_out = op_spec.make_output(
        {
            k: torch.empty_strided(v.shape, v.stride(), dtype=v.dtype, device="meta")
            if isinstance(v, torch.Tensor)
            else v
            for k, v in inputs.items()
        }
    )
    check_index_range(op, {"out": meta_out})
    if out is not None:
        check_out(op, out, meta_out.shape, meta_out.dtype, device)
    else:
        out = op_spec.make_output(inputs)
    tensors = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    wants_grad = False
    if torch.is_grad_enabled():
        for name, t in tensors.items():
            if t.requires_grad and name not in op_spec.grad_inputs:
                raise KernelInputError(
                    f"{op}: {name} requires grad, but {op} has no gradient with respect to {name}; detach it"
                )
        wants_grad = any(tensors[n].requires_grad for n in op_spec.grad_inputs if n in tensors)
    if 0 in shape:
        # Nothing to launch: the reference, on the inputs as given, is exact for an empty problem and keeps
        # autograd connected.
        result = op_spec.reference(**spec.upcast(inputs, keep_grad=True)).to(out.dtype)
        return result if wants_grad else out.copy_(result)
    reason = chosen.unsupported_shape(shape)
    if reason:
        raise UnsupportedError(f"{op}: {reason}")
    check_index_range(op, tensors)
    if not wants_grad:
        return chosen.forward(**inputs, out=out)
    if chosen.backward is None:
        raise UnsupportedError(f"{op}: {chosen.key} has no backward ({chosen.no_backward}); use another variant")
    names = tuple(tensors)
    options = {k: v for k, v in inputs.items() if k not in tensors}
    return _Autograd.apply(chosen, names, options, [out], *tensors.values())


def allocate_poisoned(op: str, inputs: spec.Inputs) -> torch.Tensor:
    """An output for ``inputs`` filled with NaN, for the correctness suite."""
    return memory.poison_(spec.get(op).make_output(inputs))
