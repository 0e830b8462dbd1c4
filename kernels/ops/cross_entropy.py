"""cross_entropy: softmax cross-entropy of ``logits[T, V]`` against class indices ``target[T]``, as
``torch.nn.functional.cross_entropy`` computes it (no class weights).

Per row, ``loss_i = (1 - eps) * (lse_i - x_i[t_i]) + eps * (lse_i - mean_j x_ij)`` with ``lse_i`` the
logsumexp of the row and ``eps`` the label smoothing; rows whose target is ``ignore_index`` contribute 0 and are
not counted. ``reduction="mean"`` divides the sum by the number of counted rows (NaN when every row is ignored,
as in torch), ``"sum"`` does not, ``"none"`` returns the per-row losses. The result is float32 whatever the
logits' dtype (the kernels accumulate in fp32); the gradient has the logits' dtype.

A target that is neither in ``[0, V)`` nor ``ignore_index`` is refused by ``cross_entropy()`` with a
``KernelInputError`` naming its row and value. That check reads one flag back from the device, a synchronization
per call; ``check_targets=False`` skips it. The kernels never read outside a row whatever the targets: unchecked,
a bad target makes its row's loss NaN (so a reduced loss is NaN too) and its row of the gradient NaN, so a bad
label still shows.

Modes: ``mean``, ``sum``, ``none`` (the reductions) and ``smoothing`` (label smoothing 0.1, reduction mean).
Every generated input marks a few targets (never all of them) as ``ignore_index``.
"""

from __future__ import annotations

import numbers

import torch

from kernels import dispatch, peers, spec
from kernels.errors import KernelInputError
from kernels.ops._util import require_floating, require_tensor

REDUCTIONS = ("mean", "sum", "none")
IGNORE_INDEX = -100
INT64 = (-(2**63), 2**63 - 1)


def reference(logits, target, ignore_index=IGNORE_INDEX, label_smoothing=0.0, reduction="mean"):
    return torch.nn.functional.cross_entropy(
        logits, target, ignore_index=ignore_index, label_smoothing=label_smoothing, reduction=reduction
    )


def _validate(inputs: spec.Inputs) -> None:
    logits = require_tensor("cross_entropy", "logits", inputs["logits"])
    target = require_tensor("cross_entropy", "target", inputs["target"])
    require_floating("cross_entropy", "logits", logits)
    if logits.dim() != 2:
        raise KernelInputError(f"cross_entropy: logits must be 2-D [T, V], got shape {tuple(logits.shape)}")
    T, V = logits.shape
    if logits.numel() and V > 1 and logits.stride(1) != 1:
        raise KernelInputError(
            f"cross_entropy: the vocabulary dimension of logits must be contiguous (stride 1), got strides "
            f"{logits.stride()}; pass logits.contiguous()"
        )
    if target.dtype != torch.int64:
        raise KernelInputError(f"cross_entropy: target must hold int64 class indices, got {target.dtype}")
    if target.shape != (T,):
        raise KernelInputError(
            f"cross_entropy: target must have shape [T] = [{T}] (one class index per row of logits), "
            f"got {list(target.shape)}"
        )
    if target.device != logits.device:
        raise KernelInputError(f"cross_entropy: target is on {target.device} but logits is on {logits.device}")
    if T > 0 and V == 0:
        raise KernelInputError("cross_entropy: logits has no classes (V = 0), so no target can be in range")
    ignore_index = inputs["ignore_index"]
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise KernelInputError(f"cross_entropy: ignore_index must be an int, got {type(ignore_index).__name__}")
    if not INT64[0] <= ignore_index <= INT64[1]:
        raise KernelInputError(f"cross_entropy: ignore_index must fit in int64, got {ignore_index}")
    smoothing = inputs["label_smoothing"]
    if isinstance(smoothing, bool) or not isinstance(smoothing, numbers.Real):
        raise KernelInputError(
            f"cross_entropy: label_smoothing must be a float in [0, 1], got {type(smoothing).__name__} {smoothing!r}"
        )
    if not 0.0 <= smoothing <= 1.0:
        raise KernelInputError(f"cross_entropy: label_smoothing must be in [0, 1], got {smoothing!r}")
    if inputs["reduction"] not in REDUCTIONS:
        raise KernelInputError(f"cross_entropy: reduction must be one of {REDUCTIONS}, got {inputs['reduction']!r}")


def _mode_of(inputs: spec.Inputs) -> str:
    return "smoothing" if inputs["label_smoothing"] != 0 else inputs["reduction"]


def _make_inputs(shape, dtype, device, generator, mode):
    T, V = shape
    # Scale 2 gives LLM-like logits: the row's softmax is far from uniform, exp() spans a range where a
    # missing max-subtraction would lose the small terms, and the loss is O(log V).
    logits = spec.randn((T, V), dtype, device, generator, scale=2.0)
    target = torch.randint(0, V, (T,), generator=generator, device=generator.device)
    if T > 1:
        # A few ignored rows (an eighth, at least one), never all of them: the mean must not count them.
        ignored = torch.randperm(T, generator=generator, device=generator.device)[: max(1, T // 8)]
        target[ignored] = IGNORE_INDEX
    return {
        "logits": logits,
        "target": target.to(device),
        "ignore_index": IGNORE_INDEX,
        "label_smoothing": 0.1 if mode == "smoothing" else 0.0,
        "reduction": "mean" if mode == "smoothing" else mode,
    }


def _make_output(inputs: spec.Inputs) -> torch.Tensor:
    logits = inputs["logits"]
    shape = (logits.shape[0],) if inputs["reduction"] == "none" else ()
    return torch.empty(shape, dtype=torch.float32, device=logits.device)


def _liger(F):
    return lambda logits, target, ignore_index, label_smoothing, reduction: F.liger_cross_entropy(
        logits, target, ignore_index=ignore_index, label_smoothing=label_smoothing, reduction=reduction
    )


SPEC = spec.define(
    spec.OpSpec(
        name="cross_entropy",
        signature="cross_entropy(logits[T, V], target[T] int64, *, ignore_index=-100, label_smoothing=0.0, "
        "reduction='mean'|'sum'|'none') -> float32 [] or [T]",
        dims=("tokens", "vocab"),
        reference=reference,
        special_values=spec.SpecialValues(
            inputs=("logits",),
            not_applicable={"target": "int64 class indices"},
            masked_rows=("logits",),
            mode="none",
        ),
        make_inputs=_make_inputs,
        make_output=_make_output,
        problem_shape=lambda i: tuple(i["logits"].shape),
        validate=_validate,
        operand_dtype=lambda i: i["logits"].dtype,
        # (1, 5): one row, so nothing ignored; (5, 4099): rows of several vocabulary blocks.
        cpu_shapes=[(1, 5), (7, 129), (13, 1000), (5, 4099)],
        # Llama-2, Llama-3 and Gemma vocabularies at a token count whose float64 reference (logits, log-softmax
        # and gradient) still fits beside the kernels; then GPT-2's odd vocabulary at an odd token count.
        gpu_shapes=[(4096, 32000), (2048, 128256), (1024, 256000), (999, 50257)],
        # Llama-2, Llama-3 and Gemma vocabularies.
        bench_shapes=[(4096, 32000), (2048, 128256), (1024, 256000)],
        # Per logit: the running max, a subtract, an exp and an add for the logsumexp, one add for the mean.
        flops=lambda s: 5 * s[0] * s[1],
        # The logits and targets read once, the per-row losses written once.
        bytes_moved=lambda s, dtype: s[0] * s[1] * dtype.itemsize + s[0] * (8 + 4),
        has_backward=True,
        grad_inputs=("logits",),
        # A training step must read the logits and write their gradient once each: the gradient can be written in
        # the forward pass, which already holds each row's logsumexp. Targets read, per-row losses written.
        forward_backward_bytes=lambda i: 2 * spec.nbytes(i["logits"]) + i["target"].numel() * (8 + 4),
        modes=("mean", "sum", "none", "smoothing"),
        mode_of=_mode_of,
        default_variant="fused",
        peers={"liger": peers.liger(_liger)},
    )
)


def check_target_range(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> None:
    """Raise ``KernelInputError`` naming the first target outside ``[0, V)`` that is not ``ignore_index``. For inputs
    that passed the op's checks (``_validate``)."""
    vocab = logits.shape[1]
    bad = ((target < 0) | (target >= vocab)) & (target != ignore_index)
    if bad.any():
        row = int(bad.nonzero()[0, 0])
        raise KernelInputError(
            f"cross_entropy: target[{row}] = {int(target[row])} is not a class index in [0, {vocab}) nor "
            f"ignore_index ({ignore_index}); {int(bad.sum())} of {target.numel()} targets are out of range"
        )


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int = IGNORE_INDEX,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    check_targets: bool = True,
    variant: str | None = None,
    out: torch.Tensor | None = None,
):
    """Cross-entropy of ``logits[T, V]`` against ``target[T]`` (float32 result: a scalar for ``"mean"`` and
    ``"sum"``, ``[T]`` for ``"none"``) with a kernelwatch variant (default: fused). ``check_targets`` refuses a
    target out of range at the cost of one device synchronization; without it such a row's loss is NaN."""
    inputs = {
        "logits": logits,
        "target": target,
        "ignore_index": ignore_index,
        "label_smoothing": label_smoothing,
        "reduction": reduction,
    }
    if check_targets:
        # Target values are read only from inputs known to be good, so the entry point's own checks go first; the
        # dispatcher repeats them (host work, on a call that pays a device read anyway).
        dispatch.check_devices("cross_entropy", inputs)
        _validate(inputs)
        check_target_range(logits, target, ignore_index)
    return dispatch.run("cross_entropy", inputs, variant=variant, out=out)
