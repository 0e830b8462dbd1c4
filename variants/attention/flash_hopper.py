"""attention, flash_hopper: FlashAttention for Hopper that moves Q, K, V, O and dO, dQ, dK, dV through TMA tensor
descriptors. The forward (variants/attention/_flash_tma.py) folds the softmax scale into one multiply-add per score
and is autotuned over 128-row query tiles, 64- or 128-key tiles, warps and pipeline stages, keyed on the sequence
lengths, head dimension and mask; it stores flash's base-2 logsumexp. The backward
(variants/attention/_flash_tma_bwd.py) is flash's atomic-free FlashAttention-2 backward on descriptors, its dK/dV
and dQ passes autotuned apart.

fp16 and bf16 only: TMA tiles of fp32 at 128 x 128 do not fit shared memory, and fp32 attention is served by
flash and flash_autotuned. Compute capability 9.0, where TMA starts. A scale <= 0 and an operand layout TMA cannot
address are handled as _flash_tma.py's docstring says (the pointer kernel; a contiguous copy); the backward takes
any scale, and copies an operand TMA cannot address.
"""

import torch

from kernels.registry import register
from kernels.tuning import autotune
from variants.attention import _flash_tma_bwd as bwd
from variants.attention._flash import new_lse
from variants.attention._flash_tma import CONFIGS, flash_tma_forward_kernel, launch_forward, prune

_tuned_forward = autotune(
    configs=CONFIGS,
    key=["seq_q", "seq_k", "HEAD_DIM", "CAUSAL"],
    prune_configs_by={"early_config_prune": prune},
)(flash_tma_forward_kernel)
# The dK/dV pass's work per program grows with the group of query heads it loops over; the dQ pass's does not.
_tuned_dkdv = autotune(
    configs=bwd.DKDV_CONFIGS,
    key=["seq_q", "seq_k", "group", "HEAD_DIM", "CAUSAL"],
    prune_configs_by={"early_config_prune": bwd.prune_dkdv},
)(bwd.dkdv_tma_kernel)
_tuned_dq = autotune(
    configs=bwd.DQ_CONFIGS,
    key=["seq_q", "seq_k", "HEAD_DIM", "CAUSAL"],
    prune_configs_by={"early_config_prune": bwd.prune_dq},
)(bwd.dq_tma_kernel)


def _backward(inputs, out, grad_out):
    return bwd.flash_tma_backward(inputs, out, grad_out, dkdv_kernel=_tuned_dkdv, dq_kernel=_tuned_dq)


@register(
    op="attention",
    name="flash_hopper",
    version="1.1.0",
    dtypes=(torch.float16, torch.bfloat16),
    min_cc=(9, 0),
    backward=_backward,
)
def attention_flash_hopper(q, k, v, causal, scale, *, out, stash):
    """TMA-descriptor flash forward and backward, the scale folded into exp2's multiply-add, autotuned for Hopper."""
    lse = new_lse(q) if stash is not None else None
    launch_forward(q, k, v, out, causal=causal, scale=scale, lse=lse, kernel=_tuned_forward)
    if stash is not None:
        stash["lse"] = lse
    return out
