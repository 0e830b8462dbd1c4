"""Pieces the windowed_rope_attention variants share: the mixing of the two scores by distance, and the launch
arguments every kernel takes.

An underscore module: it registers nothing.
"""

import triton
import triton.language as tl


@triton.jit
def mix_scores(s1, s2, dist, window, near_from, inv_transition, BLEND: tl.constexpr):
    """``(s, alpha)``: the mixed score ``(1 - alpha) * s1 + alpha * s2`` and its weight, for distances ``dist``
    (alpha as in the op's docstring; near_from = window - transition)."""
    if BLEND:
        alpha = tl.minimum(tl.maximum((dist - near_from).to(tl.float32) * inv_transition, 0.0), 1.0)
    else:
        alpha = (dist >= window).to(tl.float32)
    return s1 + alpha * (s2 - s1), alpha


def scalars(q1, window, transition, scale):
    """(scale, near_from, 1 / transition, blend) for a launch: the softmax scale (default 1/sqrt(head_dim)), the
    distance where blending starts, and whether there is a blend at all."""
    scale = q1.shape[-1] ** -0.5 if scale is None else float(scale)
    blend = transition > 0
    return scale, window - transition, (1.0 / transition) if blend else 0.0, blend


def head_block(head_dim: int) -> int:
    """The head dim padded to a power of two of at least 16, the smallest a tl.dot dimension may be."""
    return max(16, triton.next_power_of_2(head_dim))
