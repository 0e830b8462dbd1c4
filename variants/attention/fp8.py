"""attention, fp8: the flash forward (variants/attention/_flash.py) on e4m3 q, k and v with per-tensor scales.
Both products run on fp8 tensor cores: Q K^T on the e4m3 operands, with q_scale * k_scale folded into the
softmax's scale, and P V on the probabilities cast to e4m3 (times 256, see _flash.py), with v_scale applied to
the output. The result is bf16.

Hopper's fp8 MMA wants both operands K-major. For Q K^T they are (the head dimension is the contiguous one);
for P V the reduction runs over keys, so V is copied once into a [B, Hkv, D, Sk] layout first: one pass over
V, as fp8 attention kernels do, against 2 * Sq * Sk * D multiply-adds.

Under the interpreter the probabilities are rounded onto the e4m3 grid in software before the cast, because the
interpreter's own downcast rounds wrongly (see _flash.py); on a GPU the cast instruction rounds them.
"""

import torch

from kernels.registry import register
from variants.attention._flash import launch_forward


@register(
    op="attention",
    name="fp8",
    version="1.0.1",
    dtypes=(torch.float8_e4m3fn,),
    min_cc=(8, 9),
    # fp8 tensor-core instructions reduce over 32 elements at a time: Q K^T needs a head_dim of at least 32.
    limits={"D": (32, 128)},
    no_backward="fp8 attention is inference-only: e4m3 operands carry no gradient",
)
def attention_fp8(q, k, v, causal, scale, q_scale, k_scale, v_scale, *, out):
    """Flash forward with both products on e4m3 tensor cores, per-tensor scales folded into softmax and output."""
    v_keys_contiguous = v.transpose(2, 3).contiguous().transpose(2, 3)
    scales = torch.cat([q_scale, k_scale, v_scale])
    return launch_forward(q, k, v_keys_contiguous, out, causal=causal, scale=scale, fp8_scales=scales)
