"""attention, flash_hopper: a FlashAttention forward for Hopper (variants/attention/_flash_tma.py) that moves Q, K, V
and O through TMA tensor descriptors and folds the softmax scale into one multiply-add per score, autotuned over
128-row query tiles, 64- or 128-key tiles, warps and pipeline stages, keyed on the sequence lengths, head
dimension and mask. It stores flash's logsumexp, and the backward is flash's.

fp16 and bf16 only: TMA tiles of fp32 at 128 x 128 do not fit shared memory, and fp32 attention is served by
flash and flash_autotuned. Compute capability 9.0, where TMA starts. A scale <= 0 and an operand layout TMA cannot
address are handled as _flash_tma.py's docstring says (the pointer kernel; a contiguous copy).
"""

import torch

from kernels.registry import register
from kernels.tuning import autotune
from variants.attention._flash import new_lse
from variants.attention._flash_tma import CONFIGS, flash_tma_forward_kernel, launch_forward, prune
from variants.attention.flash import flash_backward

_tuned_forward = autotune(
    configs=CONFIGS,
    key=["seq_q", "seq_k", "HEAD_DIM", "CAUSAL"],
    prune_configs_by={"early_config_prune": prune},
)(flash_tma_forward_kernel)


def _backward(inputs, out, grad_out):
    return flash_backward(inputs, out, grad_out)


@register(
    op="attention",
    name="flash_hopper",
    version="1.0.1",
    dtypes=(torch.float16, torch.bfloat16),
    min_cc=(9, 0),
    backward=_backward,
)
def attention_flash_hopper(q, k, v, causal, scale, *, out, stash):
    """TMA-descriptor flash forward with the scale folded into exp2's multiply-add, autotuned for Hopper."""
    lse = new_lse(q) if stash is not None else None
    launch_forward(q, k, v, out, causal=causal, scale=scale, lse=lse, kernel=_tuned_forward)
    if stash is not None:
        stash["lse"] = lse
    return out
