"""Pieces the matmul variants share: masked tile access, grouped launch order, and the backward by matmul.

An underscore module: it registers nothing.
"""

import triton
import triton.language as tl

from kernels import memory


@triton.jit
def load_tile(ptr, rows, cols, n_rows, n_cols, stride_r, stride_c):
    # Zeros outside the matrix add nothing to a dot product, so ragged edges need no special case.
    mask = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    return tl.load(ptr + rows[:, None] * stride_r + cols[None, :] * stride_c, mask=mask, other=0.0)


@triton.jit
def store_tile(ptr, value, rows, cols, n_rows, n_cols, stride_r, stride_c):
    # The fp32 accumulator is rounded once, here, to the destination's dtype.
    mask = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    tl.store(ptr + rows[:, None] * stride_r + cols[None, :] * stride_c, value.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def grouped_tile(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    # Walk the output GROUP_M tile-rows at a time, column by column: programs that run together then read
    # the same few row-panels of A and column-panels of B, which stay in L2.
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * tiles_n
    first_m = (pid // per_group) * GROUP_M
    rows_in_group = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % rows_in_group
    pid_n = (pid % per_group) // rows_in_group
    return pid_m, pid_n


def grouped_grid(M, N):
    """A 1-D launch grid of one program per [BLOCK_M, BLOCK_N] output tile, for kernels using grouped_tile."""
    return lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)


def grads_by_matmul(launch, inputs, grad_out):
    """``{"a": grad_out @ b^T, "b": a^T @ grad_out}``, each by ``launch(x, y, out=...)`` on transposed views."""
    a, b = inputs["a"], inputs["b"]
    da = memory.empty(a.shape, dtype=a.dtype, device=a.device)
    db = memory.empty(b.shape, dtype=b.dtype, device=b.device)
    return {"a": launch(grad_out, b.t(), out=da), "b": launch(a.t(), grad_out, out=db)}
