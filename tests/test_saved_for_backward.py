"""What autograd keeps alive between a variant's forward and its backward: only the tensors its backward reads
(``backward_reads`` on @register). This is where a low-memory variant's saving is real or not. Seeded dropout
redraws its mask, and fused cross-entropy writes its gradient in the forward pass. Keeping their inputs and
outputs alive anyway would undo that."""

from __future__ import annotations

import pytest
import torch

from kernels import backend, cases, dispatch, registry
from kernels.registry import RegistrationError, register

registry.discover()
DECLARED = [v for v in registry.all_variants() if v.backward_reads is not None]


def _saved_during_forward(case: cases.Case):
    inputs = case.inputs()
    for name in case.spec.grad_inputs:
        if isinstance(inputs.get(name), torch.Tensor):
            inputs[name] = inputs[name].detach().requires_grad_()
    saved: list[torch.Tensor] = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = dispatch.run(case.op, inputs, variant=case.variant.name)
    return inputs, out if isinstance(out, tuple) else (out,), saved


def test_the_low_memory_variants_declare_what_they_read() -> None:
    keys = {v.key for v in DECLARED}
    assert {"dropout.seeded", "dropout.naive", "cross_entropy.fused"} <= keys


@pytest.mark.parametrize("variant", DECLARED, ids=lambda v: v.key)
def test_backward_keeps_only_what_it_reads(variant: registry.Variant) -> None:
    case = cases.cases(backend.name(), [variant])[-1]  # the largest CPU shape of its last dtype and mode
    inputs, outs, saved = _saved_during_forward(case)
    kept = {t.data_ptr() for t in saved if t.numel() > 1}
    for name, t in inputs.items():
        if isinstance(t, torch.Tensor) and name not in variant.backward_reads:
            assert t.data_ptr() not in kept, f"{variant.key} keeps {name} for backward, which does not read it"
    if "out" not in variant.backward_reads:
        assert not any(o.data_ptr() in kept for o in outs), f"{variant.key} keeps its output for backward"
    # And backward still runs on what was kept (its values are checked by test_correctness.test_backward).
    grads = [i for i in inputs.values() if isinstance(i, torch.Tensor) and i.requires_grad]
    torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
    assert all(g.grad is not None and g.grad.shape == g.shape for g in grads)


def test_backward_reads_must_name_inputs_of_the_launcher() -> None:
    with pytest.raises(RegistrationError, match=r"backward_reads names \['logit'\]"):

        @register(op="cross_entropy", name="typo", version="1.0.0", dtypes=[torch.float32], modes=["mean"],
                  backward=lambda *a: {}, backward_reads=("logit",))  # fmt: skip
        def launcher(logits, target, ignore_index, label_smoothing, reduction, *, out):
            return out
