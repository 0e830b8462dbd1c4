"""How a variant's gradients are judged: autograd of the op's float64 reference, seeded with the output gradient the
variant's backward was given, and the tolerance each input's gradient is held to.

One definition for the backward tests (``tests/test_correctness.py::test_backward``) and the asv suite's backward
error series (``kernels/benchsuite.py``), so a gradient that passes one is judged the same way by the other.
"""

from __future__ import annotations

import torch

from kernels import spec
from kernels.tolerance import Tolerance


def _tuple(x) -> tuple[torch.Tensor, ...]:
    return x if isinstance(x, tuple) else (x,)


def differentiable(op_spec: spec.OpSpec, inputs: spec.Inputs) -> list[str]:
    """The inputs that receive a gradient: the op's ``grad_inputs`` that are tensors here (an optional input
    such as a bias may be None)."""
    return [n for n in op_spec.grad_inputs if isinstance(inputs.get(n), torch.Tensor)]


def reference(op_spec: spec.OpSpec, inputs: spec.Inputs, out, grad_out) -> dict[str, torch.Tensor]:
    """The float64 gradient of each differentiable input: autograd of the op's reference at ``inputs`` upcast,
    seeded with ``grad_out`` (a tensor, or a tuple for an op with several outputs). ``out`` is the variant's forward
    output, which the reference reads when the op says so (dropout's mask)."""
    names = differentiable(op_spec, inputs)
    ref_inputs = {
        k: (v.detach().double().requires_grad_() if k in names else v) for k, v in spec.upcast(inputs).items()
    }
    outs = _tuple(out)
    extra = {"out": tuple(o.detach() for o in outs) if len(outs) > 1 else outs[0].detach()}
    ref_out = _tuple(op_spec.reference(**ref_inputs, **(extra if op_spec.reference_needs_output else {})))
    torch.autograd.backward(ref_out, [g.double() for g in _tuple(grad_out)])
    return {name: ref_inputs[name].grad for name in names}


def tolerance(op_spec: spec.OpSpec, got_dtype: torch.dtype, operand_dtype: torch.dtype, want) -> Tolerance:
    """The tolerance for a gradient of ``got_dtype`` whose float64 reference is ``want``."""
    # The floors are for O(1) values; a gradient that sums many products may be larger (Tolerance.at_scale).
    return op_spec.tolerance(got_dtype, operand_dtype).at_scale(want.pow(2).mean().sqrt().item())
