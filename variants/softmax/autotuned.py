"""softmax, autotuned: the online kernel of variants/softmax/online.py, with its block size and warp count
tuned per row length. Handles rows of any length; the op's default variant."""

import triton

from kernels.dtypes import FLOATS
from kernels.ops.softmax import as_rows
from kernels.registry import register
from kernels.tuning import autotune
from variants.softmax._backward import softmax_backward
from variants.softmax.online import _softmax_online_kernel


def _drop_oversized_blocks(configs, named_args, **kwargs):
    # A block wider than the row only idles lanes. If every block is wider, keep the narrowest: one must remain.
    fitting = [c for c in configs if c.kwargs["BLOCK_COLS"] <= triton.next_power_of_2(named_args["cols"])]
    return fitting or [min(configs, key=lambda c: (c.kwargs["BLOCK_COLS"], c.num_warps))]


_softmax_autotuned_kernel = autotune(
    configs=[
        triton.Config({"BLOCK_COLS": 1024}, num_warps=4),
        triton.Config({"BLOCK_COLS": 2048}, num_warps=8),
        triton.Config({"BLOCK_COLS": 4096}, num_warps=8),
        triton.Config({"BLOCK_COLS": 4096}, num_warps=16),
        triton.Config({"BLOCK_COLS": 8192}, num_warps=16),
        # Long rows (one program per row, few programs): a wider block keeps more loads in flight per SM. At
        # 256 x 131072 on an H200, 16384 columns over 32 warps reached 55 % of copy against 44 % at 8192.
        triton.Config({"BLOCK_COLS": 16384}, num_warps=16),
        triton.Config({"BLOCK_COLS": 16384}, num_warps=32),
    ],
    key=["cols"],
    prune_configs_by={"early_config_prune": _drop_oversized_blocks},
)(_softmax_online_kernel)


@register(
    op="softmax",
    name="autotuned",
    version="1.0.3",
    dtypes=FLOATS,
    backward=softmax_backward,
)
def softmax_autotuned(x, *, out):
    """The online kernel, autotuned over block size and warps for each row length."""
    x_rows, out_rows = as_rows(x), as_rows(out)
    rows, cols = x_rows.shape
    _softmax_autotuned_kernel[(rows,)](x_rows, out_rows, x_rows.stride(0), out_rows.stride(0), cols)
    return out
