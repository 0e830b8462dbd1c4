"""rope: rotary position embedding of queries and keys, in the layout of Hugging Face models.

    q_rot, k_rot = rope(q[B, Hq, S, D], k[B, Hk, S, D], cos[S, D], sin[S, D])
    x_rot = x * cos + rotate_half(x) * sin,   rotate_half(x) = cat(-x[..., D/2:], x[..., :D/2])

cos and sin broadcast over batch and heads; Hk may differ from Hq (grouped-query attention). q and k may be
strided views (say, slices of one fused qkv projection), and cos and sin any strided [S, D] view (an expanded
or sliced cache): the kernels take every stride. cos and sin are in q's dtype or in float32; they get no
gradient. The results are new contiguous tensors.
"""

from __future__ import annotations

import torch

from kernels import dispatch, spec
from kernels.errors import KernelInputError
from kernels.ops._util import require_floating, require_same_dtype, require_tensor

THETA = 10000.0


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def reference(q, k, cos, sin):
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def _validate(inputs: spec.Inputs) -> None:
    q = require_tensor("rope", "q", inputs["q"])
    k = require_tensor("rope", "k", inputs["k"])
    cos = require_tensor("rope", "cos", inputs["cos"])
    sin = require_tensor("rope", "sin", inputs["sin"])
    require_floating("rope", "q", q)
    require_same_dtype("rope", q=q, k=k)
    for name, t in (("q", q), ("k", k)):
        if t.dim() != 4:
            raise KernelInputError(f"rope: {name} must be 4-D [batch, heads, seq, head_dim], got {tuple(t.shape)}")
    B, _, S, D = q.shape
    if (k.shape[0], k.shape[2], k.shape[3]) != (B, S, D):
        raise KernelInputError(
            f"rope: q is [B, Hq, S, D] = {list(q.shape)} and k is [B, Hk, S, D] = {list(k.shape)}: "
            "batch, seq and head_dim must match (only the head counts may differ)"
        )
    if D % 2:
        raise KernelInputError(f"rope: head_dim must be even (it is rotated in two halves), got {D}")
    for name, t in (("cos", cos), ("sin", sin)):
        require_floating("rope", name, t)
        if tuple(t.shape) != (S, D):
            raise KernelInputError(
                f"rope: {name} must have shape [seq, head_dim] = [{S}, {D}], got {list(t.shape)} "
                "(squeeze any leading batch/head dimensions of size 1)"
            )
        if t.dtype not in (q.dtype, torch.float32):
            raise KernelInputError(f"rope: {name} must be {q.dtype} like q, or float32, got {t.dtype}")
    require_same_dtype("rope", cos=cos, sin=sin)


def rotary_tables(seq: int, dim: int, theta: float = THETA) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [seq, dim] in float32 for positions 0..seq-1, as Hugging Face's rotary embedding builds them
    (each half of the last dimension repeats the other)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    freqs = torch.outer(torch.arange(seq, dtype=torch.float32), inv_freq)
    angles = torch.cat((freqs, freqs), dim=-1)
    return angles.cos(), angles.sin()


def _make_inputs(shape, dtype, device, generator, mode):
    B, Hq, Hk, S, D = shape
    cos, sin = rotary_tables(S, D)
    return {
        "q": spec.randn((B, Hq, S, D), dtype, device, generator),
        "k": spec.randn((B, Hk, S, D), dtype, device, generator),
        "cos": cos.to(device=device, dtype=dtype),
        "sin": sin.to(device=device, dtype=dtype),
    }


def _make_output(inputs: spec.Inputs) -> tuple[torch.Tensor, torch.Tensor]:
    q, k = inputs["q"], inputs["k"]
    return (
        torch.empty(q.shape, dtype=q.dtype, device=q.device),
        torch.empty(k.shape, dtype=k.dtype, device=k.device),
    )


def _rows(s) -> int:
    """Rows of head_dim elements in q and k together."""
    B, Hq, Hk, S, _ = s
    return B * (Hq + Hk) * S


SPEC = spec.define(
    spec.OpSpec(
        name="rope",
        signature="rope(q[B,Hq,S,D], k[B,Hk,S,D], cos[S,D], sin[S,D]) -> (q_rot[B,Hq,S,D], k_rot[B,Hk,S,D])",
        dims=("batch", "q_heads", "kv_heads", "seq", "head_dim"),
        reference=reference,
        special_values=spec.SpecialValues(inputs=("q", "k", "cos", "sin")),
        make_inputs=_make_inputs,
        make_output=_make_output,
        problem_shape=lambda i: (
            i["q"].shape[0],
            i["q"].shape[1],
            i["k"].shape[1],
            i["q"].shape[2],
            i["q"].shape[3],
        ),
        validate=_validate,
        operand_dtype=lambda i: i["q"].dtype,
        # (1, 3, 1, 7, 8): GQA down to one kv head, a seq of 7; (1, 2, 2, 5, 12): a half of 6, not a power of
        # two; (2, 4, 2, 33, 16): several batches and heads; (1, 2, 1, 300, 16): several position tiles per
        # head with a ragged last one.
        cpu_shapes=[(1, 3, 1, 7, 8), (1, 2, 2, 5, 12), (2, 4, 2, 33, 16), (1, 2, 1, 300, 16)],
        gpu_shapes=[(1, 32, 32, 1000, 64), (4, 32, 8, 4096, 128), (3, 28, 4, 777, 128)],
        # Llama-3-8B heads (32 q, 8 kv, head_dim 128) at 4096 tokens.
        bench_shapes=[(4, 32, 8, 4096, 128)],
        # Two multiplies and an add per element.
        flops=lambda s: 3 * _rows(s) * s[4],
        # q and k read and written once; cos and sin read once (they are reused from cache across heads).
        bytes_moved=lambda s, dtype: (2 * _rows(s) * s[4] + 2 * s[3] * s[4]) * dtype.itemsize,
        has_backward=True,
        grad_inputs=("q", "k"),
        # The rotation is linear: dq and dk come from the output gradients, cos and sin alone (q and k unread).
        backward_bytes=lambda i: (
            sum(spec.nbytes(i[n]) for n in ("q", "k")) * 2 + spec.nbytes(i["cos"]) + spec.nbytes(i["sin"])
        ),
    )
)


def rope(
    q: torch.Tensor,
    k: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    *,
    variant: str | None = None,
    out: tuple[torch.Tensor, torch.Tensor] | None = None,
):
    """``(q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin)`` with a kernelwatch variant
    (default: naive)."""
    return dispatch.run("rope", {"q": q, "k": k, "cos": cos, "sin": sin}, variant=variant, out=out)
