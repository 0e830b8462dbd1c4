"""windowed_rope_attention: causal attention with two rotary encodings, switched by query-key distance
(ReRoPE-style length extrapolation).

    o[B, H, S, D] = windowed_rope_attention(q1, k1, q2, k2, v, *, window, transition=0, scale=None)

``q1``/``k1`` carry the first rotary encoding (the one the model was trained with), ``q2``/``k2`` the second (for
distances the model never saw, e.g. a constant or rescaled position); all five are [batch, heads, seq, head_dim]
with the same shape. For a query at position i and a key at position j <= i (causal), with distance d = i - j:

    s1 = scale * q1[i] . k1[j],   s2 = scale * q2[i] . k2[j]
    alpha(d) = clamp((d - (window - transition)) / transition, 0, 1)   when transition > 0
    alpha(d) = 1 if d >= window else 0                                 when transition = 0
    s[i, j] = (1 - alpha) * s1 + alpha * s2
    o[i] = sum_j softmax_j(s[i, :])[j] * v[j]                          (keys j > i are masked out)

So distances below ``window - transition`` use the first encoding alone, distances of ``window`` and beyond the
second alone, and with a transition width the scores blend linearly in between: alpha is 0 at
d = window - transition and reaches 1 at d = window. ``scale`` defaults to 1/sqrt(head_dim). The five tensors share
one floating dtype; the result is in that dtype, with fp32 accumulation. Any strides are taken.

Modes: ``default`` (transition 0, a hard switch) and ``blend`` (transition > 0). The backward gives gradients for
all five tensors.
"""

from __future__ import annotations

import math
import numbers

import torch

from kernels import dispatch, spec, tolerance
from kernels.errors import KernelInputError
from kernels.ops._util import require_floating, require_same_dtype, require_tensor

NAMES = ("q1", "k1", "q2", "k2", "v")


def mixing_weight(seq: int, window: int, transition: int, device) -> torch.Tensor:
    """alpha[i, j] of the module docstring, in float64, for every query i and key j of a sequence (j > i too: the
    causal mask removes those)."""
    pos = torch.arange(seq, device=device, dtype=torch.float64)
    dist = pos[:, None] - pos[None, :]
    if transition > 0:
        return ((dist - (window - transition)) / transition).clamp(0.0, 1.0)
    return (dist >= window).to(torch.float64)


def reference(q1, k1, q2, k2, v, window, transition=0, scale=None):
    # Also the "eager" peer of the bench: both score matrices, the mix, a masked softmax and P @ V in the inputs'
    # dtype (in float64 for the correctness tests).
    seq, head_dim = q1.shape[-2], q1.shape[-1]
    scale = head_dim**-0.5 if scale is None else scale
    s1 = (q1 @ k1.transpose(-1, -2)) * scale
    s2 = (q2 @ k2.transpose(-1, -2)) * scale
    alpha = mixing_weight(seq, window, transition, q1.device).to(s1.dtype)
    s = (1 - alpha) * s1 + alpha * s2
    causal = torch.ones(seq, seq, dtype=torch.bool, device=q1.device).tril()
    s = s.masked_fill(~causal, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _validate(inputs: spec.Inputs) -> None:
    op = "windowed_rope_attention"
    q1, k1, q2, k2, v = (require_tensor(op, n, inputs[n]) for n in NAMES)
    tensors = dict(zip(NAMES, (q1, k1, q2, k2, v), strict=True))
    if any(t.dim() != 4 for t in tensors.values()):
        shapes = ", ".join(f"{n}{tuple(t.shape)}" for n, t in tensors.items())
        raise KernelInputError(
            f"{op}: q1, k1, q2, k2 and v must all be 4-D [batch, heads, seq, head_dim], got {shapes}"
        )
    if q1.shape != q2.shape:
        raise KernelInputError(f"{op}: q1 {list(q1.shape)} and q2 {list(q2.shape)} must have the same shape")
    if k1.shape != k2.shape:
        raise KernelInputError(f"{op}: k1 {list(k1.shape)} and k2 {list(k2.shape)} must have the same shape")
    dims = {n: t.shape[-1] for n, t in tensors.items()}
    if len(set(dims.values())) != 1:
        listed = ", ".join(f"{n} {d}" for n, d in dims.items())
        raise KernelInputError(f"{op}: head dims differ ({listed}); q, k and v must share one head_dim")
    for name in ("k1", "v"):
        if tensors[name].shape[:3] != q1.shape[:3]:
            raise KernelInputError(
                f"{op}: q1 is {list(q1.shape)} and {name} is {list(tensors[name].shape)}: batch, heads and seq must "
                "match (self-attention: query and key positions are the same sequence)"
            )
    require_floating(op, "q1", q1)
    require_same_dtype(op, **tensors)
    window, transition = inputs["window"], inputs.get("transition", 0)
    if not _is_int(window) or window < 1:
        raise KernelInputError(f"{op}: window must be an integer >= 1, got {window!r}")
    if not _is_int(transition) or not 0 <= transition <= window:
        raise KernelInputError(f"{op}: transition must be an integer in [0, window={window}], got {transition!r}")
    scale = inputs.get("scale")
    if scale is not None and (
        isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale)
    ):
        raise KernelInputError(f"{op}: scale must be None or a finite real number, got {scale!r}")


def _mode_of(inputs: spec.Inputs) -> str:
    return "blend" if inputs.get("transition", 0) > 0 else "default"


def transition_for(window: int) -> int:
    """The factory's transition width in blend mode: half the window (at least 1), so the blended band is as wide as
    the pure first-encoding band before it."""
    return max(1, window // 2)


def _make_inputs(shape, dtype, device, generator, mode):
    B, H, S, D, window = shape
    # Unit-normal q and k make each score scale * q . k unit-normal too: softmax rows are neither flat nor one-hot.
    tensors = {n: spec.randn((B, H, S, D), dtype, device, generator) for n in NAMES}
    return {**tensors, "window": window, "transition": transition_for(window) if mode == "blend" else 0}


def _sdpa_first_encoding(q1, k1, q2, k2, v, window, transition=0, scale=None):
    """Not the same math: causal SDPA (flash attention) on (q1, k1, v) alone, one encoding and one QK^T per key
    block. A yardstick for speed: a windowed kernel that skips the second QK^T wherever one is enough should come
    close to it."""
    return torch.nn.functional.scaled_dot_product_attention(q1, k1, v, is_causal=True, scale=scale)


def _sdpa_roofline(shape: spec.Shape, device: torch.device):
    """Causal flash attention (SDPA) in bf16 at the same [B, H, S, D], one encoding: what a windowed kernel can at
    best approach, since the second encoding only adds work."""
    B, H, S, D, _ = shape
    q, k, v = (torch.randn((B, H, S, D), dtype=torch.bfloat16, device=device) for _ in range(3))
    return lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)


def _flops(s: spec.Shape) -> int:
    # One QK^T and one P @ V per causal (query, key) pair: 4 * D FLOPs each. The second QK^T that a blended pair
    # (distance in [window - transition, window)) needs, and that a fused kernel's key blocks straddling the
    # window spend, is left out: the shape carries no transition, and that band is a small share at long seq.
    B, H, S, D, _ = s
    return B * H * 4 * D * (S * (S + 1) // 2)


SPEC = spec.define(
    spec.OpSpec(
        name="windowed_rope_attention",
        signature=(
            "windowed_rope_attention(q1, k1, q2, k2, v [B,H,S,D], *, window, transition=0, scale=None) -> [B,H,S,D]"
        ),
        dims=("B", "H", "S", "D", "window"),
        reference=reference,
        special_values=spec.SpecialValues(
            inputs=("q1", "k1", "q2", "k2", "v"),
            differences={
                "fused:inf:f16": "open (issue 16): an infinite score leaves rows finite where torch makes them NaN, "
                "as attention's flash kernels do; not yet diagnosed",
                "fused:inf:f32": "open (issue 16): as at f16",
            },
        ),
        make_inputs=_make_inputs,
        make_output=lambda i: torch.empty(i["q1"].shape, dtype=i["q1"].dtype, device=i["q1"].device),
        problem_shape=lambda i: (*i["q1"].shape, i["window"]),
        validate=_validate,
        operand_dtype=lambda i: i["q1"].dtype,
        modes=("default", "blend"),
        mode_of=_mode_of,
        # seq 1: one key; seq 17 with window 5: every region (far, straddling, near, diagonal) in a few 16-blocks;
        # seq 63 with window 100: the first encoding alone, a ragged last block; seq 63 with window 1: the second
        # encoding everywhere but the diagonal.
        cpu_shapes=[(1, 1, 1, 16, 1), (1, 2, 17, 16, 5), (2, 1, 63, 32, 100), (1, 1, 63, 32, 1)],
        # The float64 reference holds several [B, H, S, S] matrices: 4 x 32 x 4096^2 of them would not fit a GPU,
        # so the bench shape is checked here at 4 heads.
        gpu_shapes=[
            (1, 1, 1, 16, 1),
            (2, 3, 129, 64, 37),
            (1, 2, 333, 80, 50),
            (1, 2, 1000, 128, 1),
            (2, 4, 1023, 64, 100000),
            (1, 8, 2048, 128, 256),
            (1, 4, 4096, 128, 512),
        ],
        # A 4k context with a 512-token window of the trained encoding, at Llama's 32 heads of 128.
        bench_shapes=[(4, 32, 4096, 128, 512)],
        roofline=_sdpa_roofline,
        roofline_name="SDPA causal bf16 (one encoding)",
        flops=_flops,
        bytes_moved=lambda s, dtype: 6 * s[0] * s[1] * s[2] * s[3] * dtype.itemsize,
        has_backward=True,
        grad_inputs=NAMES,
        peers={"SDPA causal (q1, k1, v)": lambda: _sdpa_first_encoding},
        # Checked by emulating the fused kernel's roundings in float64 (P and dS rounded to the operand dtype, or
        # to tf32, before each product) at S = 1000 and 4096, D = 128: the worst element needed atol 8e-4 (fp32),
        # 6e-4 (fp16) and 4e-3 (bf16) beside these rtols. The rest is margin for what that leaves out: the GPU's
        # exp2, the online softmax's rescaling and the order of fp32 accumulation.
        tolerance_overrides={
            torch.float32: tolerance.override(
                atol=1e-2,
                rtol=1e-2,
                reason="tl.dot rounds float32 operands to tf32 (10-bit mantissa) on tensor cores by default, in QK^T, "
                "P @ V and every gradient product, as for matmul",
            ),
            torch.float16: tolerance.override(
                atol=3e-3,
                rtol=tolerance.RESOLUTION[torch.float16].rtol,
                reason="flash attention rounds the softmax weights P (and dS in the backward) to fp16 to feed the "
                "tensor cores, as FA2 and SDPA do: each weight carries a relative error of 2**-11, summed over keys",
            ),
            torch.bfloat16: tolerance.override(
                atol=2.4e-2,
                rtol=tolerance.RESOLUTION[torch.bfloat16].rtol,
                reason="flash attention rounds the softmax weights P (and dS in the backward) to bf16 to feed the "
                "tensor cores, as FA2 and SDPA do: each weight carries a relative error of 2**-8, summed over keys",
            ),
        },
        default_variant="fused",
    )
)


def windowed_rope_attention(
    q1: torch.Tensor,
    k1: torch.Tensor,
    q2: torch.Tensor,
    k2: torch.Tensor,
    v: torch.Tensor,
    *,
    window: int,
    transition: int = 0,
    scale: float | None = None,
    variant: str | None = None,
    out: torch.Tensor | None = None,
):
    """Causal attention scoring near keys with (q1, k1) and far ones with (q2, k2), with a kernelwatch variant
    (default: fused)."""
    inputs = {"q1": q1, "k1": k1, "q2": q2, "k2": k2, "v": v, "window": window, "transition": transition}
    return dispatch.run("windowed_rope_attention", inputs | {"scale": scale}, variant=variant, out=out)
