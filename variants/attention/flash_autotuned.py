"""attention, flash_autotuned: the flash forward (variants/attention/_flash.py) autotuned for Hopper over query
and key tile sizes, warps and pipeline stages, keyed on the sequence lengths, head dimension and mask; the
backward is flash's. Every config keeps BLOCK_M a multiple of BLOCK_N, which the causal split of the key loop
needs. Configs that do not fit shared memory or registers (fp32 tiles at 128 x 128) are dropped by the autotuner
as out of resources."""

import triton

from kernels import backend
from kernels.dtypes import FLOATS
from kernels.registry import register
from kernels.tuning import autotune
from variants.attention._flash import flash_forward_kernel, launch_forward, new_lse
from variants.attention.flash import flash_backward


def _config(block_m, block_n, warps, stages):
    return triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n}, num_warps=warps, num_stages=stages)


CONFIGS = [
    _config(128, 128, 8, 3),
    _config(128, 128, 8, 2),
    _config(128, 64, 8, 3),
    _config(128, 64, 8, 4),
    _config(128, 64, 4, 3),
    _config(128, 32, 4, 4),
    _config(64, 64, 4, 3),
    _config(64, 32, 4, 4),
]
# Under the interpreter a config is run, not timed: one with small tiles, which still takes several steps over the
# odd CPU test lengths.
INTERPRETER_CONFIG = _config(32, 16, 4, 1)


def _interpreter_keeps_one(configs, named_args, **kwargs):
    return [INTERPRETER_CONFIG] if backend.interpreting() else configs


_tuned_forward = autotune(
    configs=CONFIGS,
    key=["seq_q", "seq_k", "HEAD_DIM", "CAUSAL"],
    prune_configs_by={"early_config_prune": _interpreter_keeps_one},
)(flash_forward_kernel)


def _backward(inputs, out, grad_out):
    return flash_backward(inputs, out, grad_out)


@register(op="attention", name="flash_autotuned", version="1.0.2", dtypes=FLOATS, backward=_backward)
def attention_flash_autotuned(q, k, v, causal, scale, *, out, stash):
    """The flash forward with its tiles, warps and stages autotuned per sequence lengths, head_dim and mask."""
    lse = new_lse(q) if stash is not None else None
    launch_forward(q, k, v, out, causal=causal, scale=scale, lse=lse, kernel=_tuned_forward)
    if stash is not None:
        stash["lse"] = lse
    return out
