"""attention: scaled dot-product attention with an optional causal mask and grouped-query heads.

    out[B, Hq, Sq, D] = attention(q[B, Hq, Sq, D], k[B, Hkv, Sk, D], v[B, Hkv, Sk, D], causal=False, scale=None)

    out[b, h] = softmax(scale * q[b, h] @ k[b, h // (Hq / Hkv)].T + mask) @ v[b, h // (Hq / Hkv)]

- ``scale`` defaults to ``1 / sqrt(D)``.
- Grouped-query attention: ``Hkv`` may be any divisor of ``Hq``; query head ``h`` reads key/value head
  ``h // (Hq // Hkv)`` (consecutive query heads share a key/value head, as ``repeat_interleave`` would make them).
- ``causal=True`` masks key ``j`` from query ``i`` when ``j > i``: the mask is aligned to the TOP-LEFT corner of
  the score matrix, as ``torch.nn.functional.scaled_dot_product_attention(is_causal=True)`` aligns it. With
  ``Sq != Sk`` every query still sees key 0, so no row of the softmax is empty.
- ``D`` is a power of two from 16 to 128; ``Sq`` and ``Sk`` are any length and may differ.
- Any strides are taken (a ``[B, S, H, D]`` tensor's ``.transpose(1, 2)`` included); the result is contiguous.
- fp8: e4m3 ``q``, ``k``, ``v`` with float32 per-tensor dequantization scales ``q_scale``, ``k_scale``, ``v_scale``
  (shape ``[1]``, ``x ~= x_fp8 * x_scale``); the result is bf16. Inference only.

The problem shape is ``(B, Hq, Hkv, Sq, Sk, D, mask)`` where ``mask`` is ``NO_MASK`` (1) or ``CAUSAL`` (2): the
mask is part of the shape so that the benchmarks track the causal twin of a shape beside it, and so that the FLOP
model (``4 * B * Hq * Sq * Sk * D``, halved for a causal mask) can see it. It is never 0, which the dispatcher
reads as an empty problem.
"""

from __future__ import annotations

import math
import numbers

import torch

from kernels import dispatch, spec, tolerance
from kernels.errors import KernelInputError
from kernels.ops._util import require_floating, require_same_dtype, require_tensor

NO_MASK, CAUSAL = 1, 2
HEAD_DIMS = (16, 32, 64, 128)
FP8_MAX = {torch.float8_e4m3fn: 448.0}
SCALE_NAMES = ("q_scale", "k_scale", "v_scale")
# Not 1: a kernel that ignores the scale argument, or always uses the default, fails the generated tests.
FACTORY_SCALE_FACTOR = 1.5


def _out_dtype(q: torch.Tensor) -> torch.dtype:
    return torch.bfloat16 if q.dtype in FP8_MAX else q.dtype


def default_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)


def reference(q, k, v, causal=False, scale=None, q_scale=None, k_scale=None, v_scale=None):
    # Called with float64 inputs (fp8 ones upcast exactly), so the dequantization and every product are exact
    # to float64. One batch element at a time: at the bench shape the float64 scores of the whole batch would be
    # 17 GB, and the masked and normalized copies as much again each.
    if q_scale is not None:
        q, k, v = q * q_scale, k * k_scale, v * v_scale
    group = q.shape[1] // k.shape[1]
    scale = default_scale(q.shape[-1]) if scale is None else scale
    visible = torch.ones((q.shape[2], k.shape[2]), dtype=torch.bool, device=q.device).tril()
    outs = []
    for b in range(q.shape[0]):
        s = (q[b] @ k[b].repeat_interleave(group, dim=0).transpose(-1, -2)) * scale
        if causal:
            s = s.masked_fill(~visible, float("-inf"))
        outs.append(torch.softmax(s, dim=-1) @ v[b].repeat_interleave(group, dim=0))
    return torch.stack(outs) if outs else q.new_empty((*q.shape[:3], v.shape[3]))


def _validate(inputs: spec.Inputs) -> None:
    names = ("q", "k", "v")
    q, k, v = (require_tensor("attention", n, inputs[n]) for n in names)
    if any(t.dim() != 4 for t in (q, k, v)):
        shapes = ", ".join(f"{n}{tuple(t.shape)}" for n, t in zip(names, (q, k, v), strict=True))
        raise KernelInputError(f"attention: q, k and v must all be 4-D [batch, heads, seq, head_dim], got {shapes}")
    if k.shape != v.shape:
        raise KernelInputError(
            f"attention: k and v must have the same shape [batch, kv_heads, seq_k, head_dim], got "
            f"k{tuple(k.shape)} and v{tuple(v.shape)}"
        )
    if q.shape[3] != k.shape[3]:
        raise KernelInputError(
            f"attention: head_dim of q ({q.shape[3]}) and of k and v ({k.shape[3]}) must match, got "
            f"q{tuple(q.shape)} and k{tuple(k.shape)}"
        )
    if q.shape[0] != k.shape[0]:
        raise KernelInputError(f"attention: batch of q ({q.shape[0]}) and of k and v ({k.shape[0]}) must match")
    hq, hkv = q.shape[1], k.shape[1]
    if hkv == 0 or hq % hkv != 0:
        raise KernelInputError(
            f"attention: the {hq} query heads must be a multiple of the {hkv} key/value heads (grouped-query "
            "attention shares each key/value head among the same number of query heads)"
        )
    require_floating("attention", "q", q)
    require_same_dtype("attention", q=q, k=k, v=v)
    if q.shape[3] not in HEAD_DIMS:
        raise KernelInputError(f"attention: head_dim {q.shape[3]} is unsupported; supported: {HEAD_DIMS}")
    if not isinstance(inputs.get("causal", False), bool):
        raise KernelInputError(f"attention: causal must be True or False, got {inputs.get('causal')!r}")
    scale = inputs.get("scale")
    if scale is not None and (
        isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale)
    ):
        raise KernelInputError(f"attention: scale must be None or a finite real number, got {scale!r}")
    scales = {n: inputs.get(n) for n in SCALE_NAMES}
    given = [n for n, s in scales.items() if s is not None]
    fp8 = q.dtype in FP8_MAX
    if fp8 != bool(given) or (given and len(given) != 3):
        raise KernelInputError(
            "attention: fp8 (e4m3) q, k and v need all of q_scale, k_scale and v_scale, and only fp8 inputs take "
            f"scales (q is {q.dtype}, scales given: {given or 'none'})"
        )
    for name in given:
        s = require_tensor("attention", name, scales[name])
        if s.dtype != torch.float32 or s.shape != (1,):
            raise KernelInputError(
                f"attention: {name} must be a float32 tensor of shape [1] (one scale per tensor), got "
                f"{s.dtype} {list(s.shape)}"
            )


def _problem_shape(inputs: spec.Inputs) -> spec.Shape:
    q, k = inputs["q"], inputs["k"]
    mask = CAUSAL if inputs.get("causal", False) else NO_MASK
    return (q.shape[0], q.shape[1], k.shape[1], q.shape[2], k.shape[2], q.shape[3], mask)


def _quantize(x: torch.Tensor, dtype: torch.dtype):
    """``x`` in fp8 with a float32 per-tensor scale so that ``q * scale ~= x``."""
    scale = (x.abs().amax().float() / FP8_MAX[dtype]).clamp_min(1e-12)
    return (x / scale).clamp(-FP8_MAX[dtype], FP8_MAX[dtype]).to(dtype), scale.reshape(1)


def _make_inputs(shape, dtype, device, generator, mode):
    B, Hq, Hkv, Sq, Sk, D, mask = shape
    # q and k standard normal with a scale near 1/sqrt(D): scores of O(1) standard deviation, so the softmax is
    # neither uniform nor one-hot; v standard normal, so every output is a weighted mean of O(1) values.
    inputs = {"causal": mask == CAUSAL, "scale": FACTORY_SCALE_FACTOR * default_scale(D)}
    shapes = {"q": (B, Hq, Sq, D), "k": (B, Hkv, Sk, D), "v": (B, Hkv, Sk, D)}
    for name, s in shapes.items():
        if dtype in FP8_MAX:
            inputs[name], inputs[f"{name}_scale"] = _quantize(spec.randn(s, torch.float32, device, generator), dtype)
        else:
            inputs[name] = spec.randn(s, dtype, device, generator)
    return inputs


def _sdpa(q, k, v, causal=False, scale=None, q_scale=None, k_scale=None, v_scale=None):
    """torch's scaled_dot_product_attention (FlashAttention-2 or cuDNN on a GPU) on the same inputs; fp8 ones
    dequantized to bf16 first, as an fp8 model without an fp8 attention kernel would run it."""
    if q_scale is not None:
        q, k, v = ((t.to(torch.bfloat16) * s.to(torch.bfloat16)) for t, s in ((q, q_scale), (k, k_scale), (v, v_scale)))
    gqa = q.shape[1] != k.shape[1]
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, enable_gqa=gqa)


def _sdpa_bf16(shape: spec.Shape, device: torch.device):
    """SDPA on bf16 inputs of this shape: the ceiling every variant is reported against, fp8 included."""
    B, Hq, Hkv, Sq, Sk, D, mask = shape
    q = torch.randn((B, Hq, Sq, D), dtype=torch.bfloat16, device=device)
    k = torch.randn((B, Hkv, Sk, D), dtype=torch.bfloat16, device=device)
    v = torch.randn((B, Hkv, Sk, D), dtype=torch.bfloat16, device=device)
    return lambda: _sdpa(q, k, v, causal=mask == CAUSAL)


def _flops(s: spec.Shape) -> int:
    B, Hq, _, Sq, Sk, D, mask = s
    # QK^T and PV, 2 * Sq * Sk * D each per head; a causal mask leaves about half of the score matrix.
    return 4 * B * Hq * Sq * Sk * D // mask


def _bytes(s: spec.Shape, dtype: torch.dtype) -> int:
    B, Hq, Hkv, Sq, Sk, D, _ = s
    out_size = 2 if dtype in FP8_MAX else dtype.itemsize
    return (B * Hq * Sq * D + 2 * B * Hkv * Sk * D) * dtype.itemsize + B * Hq * Sq * D * out_size


SPEC = spec.define(
    spec.OpSpec(
        name="attention",
        signature="attention(q[B,Hq,Sq,D], k[B,Hkv,Sk,D], v[B,Hkv,Sk,D], *, causal=False, scale=None, "
        "q_scale=None, k_scale=None, v_scale=None) -> [B,Hq,Sq,D]",
        dims=("B", "Hq", "Hkv", "Sq", "Sk", "D", "mask"),
        reference=reference,
        special_values=spec.SpecialValues(
            inputs=("q", "k", "v"),
            not_applicable={
                "q_scale": "a dequantization scale computed from the fp8 tensors, never user data",
                "k_scale": "a dequantization scale computed from the fp8 tensors, never user data",
                "v_scale": "a dequantization scale computed from the fp8 tensors, never user data",
            },
            differences={
                "flash:inf": "open (issue 16): an infinite score leaves the flash kernels' rows finite where torch's "
                "softmax makes them NaN (inf - inf); not yet diagnosed",
                "flash_autotuned:inf": "open (issue 16): the flash kernel's behaviour, as for flash",
                "flash_hopper:inf:f16": "open (issue 16): the flash kernel's behaviour, as for flash",
                "fp8:nan": "open (issue 16): a NaN fp8 code does not propagate through the fp8 kernel under the "
                "interpreter; not yet checked on a GPU",
            },
        ),
        make_inputs=_make_inputs,
        make_output=lambda i: torch.empty(
            (*i["q"].shape[:3], i["v"].shape[3]), dtype=_out_dtype(i["q"]), device=i["q"].device
        ),
        problem_shape=_problem_shape,
        validate=_validate,
        operand_dtype=lambda i: i["q"].dtype,
        # Kept tiny: the interpreter runs every tile op in numpy. One query and one key (head_dim 32, the smallest
        # fp8 takes, so the benchmarks' smoke run covers fp8 too); grouped-query heads with Sq < Sk, causal, at
        # head_dim 16; seq 63 (no tile divides it), two batches; Sq > Sk, causal, with 4 query heads on 2.
        cpu_shapes=[
            (1, 1, 1, 1, 1, 32, NO_MASK),
            (1, 2, 1, 17, 33, 16, CAUSAL),
            (2, 2, 2, 63, 63, 32, NO_MASK),
            (1, 4, 2, 33, 17, 32, CAUSAL),
        ],
        gpu_shapes=[
            (1, 1, 1, 1, 1, 16, NO_MASK),
            (1, 2, 1, 17, 33, 64, CAUSAL),
            (2, 3, 3, 63, 63, 128, CAUSAL),
            (1, 4, 2, 1000, 1000, 64, NO_MASK),
            (2, 8, 2, 1000, 777, 128, CAUSAL),
            (1, 4, 4, 257, 4096, 128, NO_MASK),
            (2, 16, 16, 2048, 2048, 128, CAUSAL),
        ],
        # Issue 5's target, a Llama-style prefill: batch 4, 32 heads of 128, 4096 tokens, and its causal twin.
        bench_shapes=[(4, 32, 32, 4096, 4096, 128, NO_MASK), (4, 32, 32, 4096, 4096, 128, CAUSAL)],
        bench_dtypes=(torch.bfloat16, torch.float8_e4m3fn),
        roofline=_sdpa_bf16,
        roofline_name="SDPA bf16",
        flops=_flops,
        bytes_moved=_bytes,
        has_backward=True,
        grad_inputs=("q", "k", "v"),
        # Recomputing QK^T, then dV, dP, dQ and dK: five products where the forward has two (FlashAttention-2's count).
        backward_flops=lambda s: 5 * _flops(s) // 2,
        peers={"SDPA": lambda: _sdpa},
        tolerance_overrides={
            torch.float32: tolerance.override(
                atol=1e-2,
                rtol=1e-2,
                reason="tl.dot rounds float32 operands to tf32 (10-bit mantissa) on tensor cores by default",
            ),
            torch.float16: tolerance.override(
                atol=5e-3,
                rtol=tolerance.RESOLUTION[torch.float16].rtol,
                reason="P (forward) and dS (backward) are rounded to fp16 before their tensor-core products, as "
                "FlashAttention and eager fp16 attention round them; a gradient element near 0 sums Sq x group such "
                "products of O(1) terms, each off by up to half an fp16 ulp (measured up to 2.6e-3 on the CPU cases)",
            ),
            torch.bfloat16: tolerance.override(
                atol=4e-2,
                rtol=tolerance.RESOLUTION[torch.bfloat16].rtol,
                reason="P (forward) and dS (backward) are rounded to bf16 before their tensor-core products, as "
                "FlashAttention and eager bf16 attention round them: the fp16 bound scaled by bf16's 8x coarser ulp",
            ),
            torch.float8_e4m3fn: tolerance.override(
                atol=8e-2,
                rtol=8e-2,
                reason="the probabilities are rounded to e4m3 (3 mantissa bits, up to 6% off) for the fp8 P @ V "
                "product, as fp8 attention kernels do; the operands themselves are exact in the reference. A correctly "
                "rounded CPU emulation of the kernel reached 0.86 of a 6e-2 bound at (2, 3, 3, 63, 63, 128, causal)",
            ),
        },
        default_variant="flash",
    )
)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    scale: float | None = None,
    q_scale: torch.Tensor | None = None,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
    variant: str | None = None,
    out: torch.Tensor | None = None,
):
    """``softmax(scale * q @ k.T + mask) @ v`` per head, with a kernelwatch variant (default: flash)."""
    inputs = {"q": q, "k": k, "v": v, "causal": causal, "scale": scale}
    for key, value in (("q_scale", q_scale), ("k_scale", k_scale), ("v_scale", v_scale)):
        if value is not None:
            inputs[key] = value
    return dispatch.run("attention", inputs, variant=variant, out=out)
