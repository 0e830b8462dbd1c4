"""An op spec: WHAT an operation computes, independent of any kernel that computes it.

Every variant under ``variants/<op>/`` is checked against its op's spec: the float64 reference, the input
factory, the shapes and the tolerance all live here, so a variant file holds only Triton code and its contract.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from kernels import tolerance as _tol

Shape = tuple[int, ...]
Inputs = dict[str, Any]


KINDS = ("nan", "inf", "masked")
"""The special-value cases of tests/test_special_values.py: a NaN in each named input, a +inf and a -inf in each,
and one row of each ``masked_rows`` input wholly -inf (a fully masked row of scores or logits)."""


@dataclass(frozen=True)
class SpecialValues:
    """How an op meets NaN and ±inf: which inputs take them, which cannot (and why), and any deliberate
    difference from the reference on them. tests/test_special_values.py feeds them to every variant and compares
    with the reference in float64 (NaN positions exactly); docs/correctness.md describes each op's behaviour."""

    inputs: tuple[str, ...]
    """Floating inputs that receive NaN, +inf and -inf."""
    not_applicable: dict[str, str] = field(default_factory=dict)
    """Every other tensor input, with why special values make no sense in it (integer codes, an index)."""
    masked_rows: tuple[str, ...] = ()
    """Inputs in which a whole row (along the last dim) of -inf is meaningful: softmax's x, cross-entropy's logits."""
    mode: str | None = None
    """The input mode the test uses (one is enough); None: each variant's first."""
    differences: dict[str, str] = field(default_factory=dict)
    """Known differences from the reference, ``"variant:kind"`` or ``"variant:kind:dtype"`` (fnmatch patterns, kind
    one of ``KINDS``, dtype as in test ids: f32, bf16) -> the reason. The test is then a strict expected failure, so
    a variant that comes to match the reference makes the declaration fail and it must be removed."""

    def differs(self, variant: str, kind: str, dtype: str) -> str | None:
        """The declared reason why ``variant`` differs from the reference on ``kind`` at ``dtype``, or None."""
        import fnmatch

        for key, reason in self.differences.items():
            pattern = key if key.count(":") == 2 else f"{key}:*"
            if fnmatch.fnmatchcase(f"{variant}:{kind}:{dtype}", pattern):
                return reason
        return None

    def __post_init__(self) -> None:
        for key, reason in self.differences.items():
            parts = key.split(":")
            if len(parts) not in (2, 3) or parts[1] not in KINDS or not reason:
                raise ValueError(
                    f"special-value difference {key!r}: write 'variant:kind[:dtype]' with kind one of {KINDS}, "
                    "and give a reason"
                )
        for name, reason in self.not_applicable.items():
            if not reason:
                raise ValueError(f"special values not applicable to {name!r}: give a reason")
        if not self.inputs and not self.not_applicable:
            raise ValueError("special values: name the inputs that take them, or say why none can")


@dataclass(frozen=True)
class OpSpec:
    name: str
    signature: str
    """Human-readable call signature, shown by ``python -m kernels list`` and in docs."""
    dims: tuple[str, ...]
    """Names of the problem dimensions, e.g. ``("M", "N", "K")``; shapes and variant limits use them."""
    reference: Callable[..., torch.Tensor]
    """PyTorch reference. Called with the inputs upcast to float64; must not lose precision."""
    make_inputs: Callable[[Shape, torch.dtype, torch.device, torch.Generator, str], Inputs]
    """Seeded random inputs (never zeros) for a shape, dtype and mode."""
    make_output: Callable[[Inputs], torch.Tensor | tuple[torch.Tensor, ...]]
    """Uninitialized output(s) for these inputs: a tensor, or a tuple for ops with several outputs (the
    reference then returns a tuple in the same order). Tests poison them with NaN."""
    problem_shape: Callable[[Inputs], Shape]
    """The problem shape (values for ``dims``) of a set of inputs."""
    validate: Callable[[Inputs], None]
    """Raise ``KernelInputError`` naming the problem for inputs the op cannot accept (shapes, layout)."""
    operand_dtype: Callable[[Inputs], torch.dtype]
    """The dtype a variant's ``dtypes`` contract is matched against."""
    cpu_shapes: Sequence[Shape]
    gpu_shapes: Sequence[Shape]
    flops: Callable[[Shape], int]
    bytes_moved: Callable[[Shape, torch.dtype], int]
    """Fewest bytes a kernel must move through device memory: each input read once, each output written once."""
    has_backward: bool
    grad_inputs: tuple[str, ...] = ()
    """Inputs that receive gradients when the op has a backward."""
    modes: tuple[str, ...] = ("default",)
    """Named input modes (e.g. a matmul with a bias and GELU epilogue). Variants declare which they support."""
    mode_of: Callable[[Inputs], str] = lambda inputs: "default"
    """Which mode a set of inputs is in."""
    mode_allows: Callable[[str, torch.dtype], bool] = lambda mode, dtype: True
    """Whether a mode makes sense for an operand dtype (an fp8 matmul needs scales; a bf16 one has none)."""
    grad_scale: Callable[[Shape], float] = lambda shape: 1.0
    """Scale of the random output gradient in backward tests, so that input gradients stay O(1) and one
    tolerance table serves every shape (as the input factory does for outputs)."""
    tolerance_overrides: dict[torch.dtype, _tol.Tolerance] = field(default_factory=dict)
    empty_result: Callable[[Inputs, torch.Tensor], torch.Tensor] | None = None
    """Fill ``out`` for inputs where some dimension is zero and no kernel should launch."""
    default_variant: str = "naive"
    reference_needs_output: bool = False
    """The reference is called with ``out=`` the kernel's (detached) output as well: for ops whose result is
    defined only up to a choice the kernel makes, such as dropout's random mask. Tests for such an op check the
    choice itself separately (for dropout, the kept fraction and the seed)."""
    peers: dict[str, Callable[[], Callable | None]] = field(default_factory=dict)
    """Baselines the bench command times beside the variants, as factories returning a callable taking the op's
    inputs (or None when the peer is not installed, e.g. Liger-Kernel). "eager" (the reference on the inputs as
    given) and "torch.compile" (of the reference) are added for every op unless the spec names its own.
    Peers are benchmarked, never used as references for correctness."""
    comparable_to_naive: bool = True
    """Whether two variants on the same inputs must agree (false where each may make a different random choice)."""
    bench_shapes: Sequence[Shape] = ()
    """Realistic sizes (LLM hidden sizes, vocabularies, decode shapes) at which the asv history tracks every variant.
    Empty means the GPU shapes. Keep the list short: each shape is timed for every variant on every benchmarked
    commit."""
    bench_dtypes: tuple[torch.dtype, ...] = (torch.bfloat16,)
    """Operand dtypes the asv history tracks; a variant is timed at those it supports."""
    roofline: Callable[[Shape, torch.device], Callable[[], object]] | None = None
    """For a compute-bound op, a vendor-library call at a shape (e.g. cuBLAS for matmul), timed in the same run: the
    benchmarks report each variant's speed as a % of it. None: a memory-bound op, measured against the device's
    copy bandwidth."""
    roofline_name: str = "copy bandwidth"
    """What ``roofline`` is, in the benchmarks' units (e.g. "cuBLAS bf16")."""
    forward_bytes: Callable[[Inputs], int] | None = None
    """Fewest bytes the forward must move for these inputs, where the input mode changes it (rmsnorm's residual mode
    reads and writes twice as much). None: ``bytes_moved`` of their shape and dtype."""
    backward_bytes: Callable[[Inputs], int] | None = None
    """Fewest bytes the backward pass must move, for these inputs. None: the output gradient read once, and each
    differentiable input read once and its gradient written once (right for norms, softmax and activations; an op
    whose backward needs less, such as a linear map, or more, names its own)."""
    forward_backward_bytes: Callable[[Inputs], int] | None = None
    """Fewest bytes a forward and its backward must move together. None: the sum of the two. An op whose gradient
    can be written in the forward pass (cross-entropy) names its own."""
    backward_flops: Callable[[Shape], int] | None = None
    """FLOPs of the backward pass. None: twice the forward's (a gradient for each of a product's two operands)."""
    special_values: SpecialValues | None = None
    """NaN and ±inf: which inputs take them and any deliberate difference from the reference. Every op declares it
    (tests/test_special_values.py fails on an op that does not)."""

    def tolerance(self, dtype: torch.dtype, operand_dtype: torch.dtype | None = None) -> _tol.Tolerance:
        """The tolerance for a result of ``dtype``. An override for the operand dtype wins (an fp8 matmul writes
        bf16 but accumulates like fp8 hardware does), then an override for the result dtype, then the table."""
        if operand_dtype is not None and operand_dtype in self.tolerance_overrides:
            return self.tolerance_overrides[operand_dtype]
        return _tol.lookup(dtype, self.tolerance_overrides)

    def __post_init__(self) -> None:
        for dtype, tol in self.tolerance_overrides.items():
            if not tol.reason:
                raise ValueError(f"op {self.name}: tolerance override for {dtype} gives no reason")
        for shape in (*self.cpu_shapes, *self.gpu_shapes, *self.bench_shapes):
            if len(shape) != len(self.dims):
                raise ValueError(f"op {self.name}: shape {shape} does not match dims {self.dims}")


OPS: dict[str, OpSpec] = {}


def define(spec: OpSpec) -> OpSpec:
    if spec.name in OPS:
        raise ValueError(f"op {spec.name!r} is defined twice")
    OPS[spec.name] = spec
    return spec


def get(name: str) -> OpSpec:
    try:
        return OPS[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}; known ops: {', '.join(sorted(OPS))}") from None


def upcast(inputs: Inputs, device: torch.device | str | None = None, *, keep_grad: bool = False) -> Inputs:
    """The inputs with every floating tensor in float64, for the reference. ``keep_grad`` keeps the autograd
    connection to the originals (otherwise the copies are detached leaves)."""
    out = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            value = value if keep_grad else value.detach()
            value = value.to(device=device or value.device, dtype=torch.float64)
        out[key] = value
    return out


def nbytes(t: torch.Tensor) -> int:
    """Bytes of a tensor's elements (what a kernel moves reading or writing it once)."""
    return t.numel() * t.element_size()


def randn(shape: Shape, dtype: torch.dtype, device, generator: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    """Standard normal values drawn in float32 from ``generator``, on the generator's device, scaled, then cast
    and moved to ``device``. A CPU generator gives the same numbers on every machine (the benchmarks draw so); the
    test cases draw on their own device (``Case.inputs``), where a large input costs milliseconds, not seconds.
    Never zeros: a value that is 0 *after the cast* (a draw below the dtype's smallest subnormal, about one in 2e7
    for fp16) is replaced by 0.5."""
    x = (torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32) * scale).to(dtype)
    x = torch.where(x == 0, torch.full_like(x, 0.5), x)
    return x.to(device=device)
