"""cross_entropy, fused: one program per row. A first loop over the vocabulary keeps, per lane, a running max
and a sum of exponentials rescaled to it (an online logsumexp) and the sum of the logits; a second loop writes
the gradient of the row's loss, ``softmax - (1 - eps) * onehot(t) - eps / V``, in the logits' dtype, already
divided by the count of rows for a mean. Nothing of size [T, V] is kept but that gradient. The gradient loop runs
only when logits requires grad; ignored rows skip both loops and write a zero gradient row.

Backward is then the gradient times the output gradient. For a loss, that is almost always 1 (``loss.backward()``),
and backward returns the stored gradient as it is: a training step reads the logits and writes their gradient once
each, where scaling would read and write the [T, V] gradient once more. Deciding that costs one device-to-host
read of the output gradient (a scalar, or [T] for reduction none)."""

import torch
import triton
import triton.language as tl

from kernels import memory
from kernels.dtypes import FLOATS
from kernels.registry import register
from variants.cross_entropy._common import count_rows, reduce_rows, vocab_block

# 2048, not 4096: a block sweep on an H200 put the training step at 61.6 % of copy against 52.4 % (docs/performance.md).
MAX_BLOCK_VOCAB = 2048
MAX_BLOCK_VOCAB_BACKWARD = 2048
MODES = ("mean", "sum", "none", "smoothing")


@triton.jit
def _cross_entropy_fused_kernel(
    logits_ptr,
    target_ptr,
    loss_ptr,
    grad_ptr,
    count_ptr,
    logits_row_stride,
    target_stride,
    vocab,
    ignore_index,
    label_smoothing,
    WRITE_GRAD: tl.constexpr,
    MEAN: tl.constexpr,
    BLOCK_VOCAB: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    logits_row = logits_ptr + row * logits_row_stride
    grad_row = grad_ptr + row * vocab
    col_offsets = tl.arange(0, BLOCK_VOCAB)
    target = tl.load(target_ptr + row * target_stride)

    if target == ignore_index:
        # An ignored row adds nothing to the loss or the gradient; its logits are never read.
        tl.store(loss_ptr + row, 0.0)
        if WRITE_GRAD:
            zeros = tl.zeros([BLOCK_VOCAB], dtype=grad_ptr.dtype.element_ty)
            for start in range(0, vocab, BLOCK_VOCAB):
                cols = start + col_offsets
                tl.store(grad_row + cols, zeros, mask=cols < vocab)
    else:
        # A target out of range reads nothing and yields NaN in the loss and the gradient row: a bad label
        # shows instead of reading another row's memory.
        in_range = (target >= 0) & (target < vocab)
        target_logit = tl.load(logits_row + tl.where(in_range, target, 0), mask=in_range, other=float("nan"))
        target_logit = target_logit.to(tl.float32)

        # Per-lane online logsumexp: no reduction across the block inside the loop. The max starts finite so a
        # lane that sees only padding never computes exp(-inf - (-inf)).
        max_lanes = tl.full([BLOCK_VOCAB], -3.0e38, dtype=tl.float32)
        sum_lanes = tl.zeros([BLOCK_VOCAB], dtype=tl.float32)
        logit_sum_lanes = tl.zeros([BLOCK_VOCAB], dtype=tl.float32)
        for start in range(0, vocab, BLOCK_VOCAB):
            cols = start + col_offsets
            in_row = cols < vocab
            x = tl.load(logits_row + cols, mask=in_row, other=float("-inf")).to(tl.float32)
            # NaN propagates, as in torch: the NaN-ignoring default of tl.maximum/tl.minimum on a GPU would count a
            # NaN logit as exp(0).
            new_max = tl.maximum(max_lanes, x, propagate_nan=tl.PropagateNan.ALL)
            # One exp per element: whichever of the old max and x is smaller is scaled by exp(smaller - larger).
            scale = tl.exp(tl.minimum(max_lanes, x, propagate_nan=tl.PropagateNan.ALL) - new_max)
            sum_lanes = tl.where(x > max_lanes, sum_lanes * scale + 1.0, sum_lanes + scale)
            max_lanes = new_max
            logit_sum_lanes += tl.where(in_row, x, 0.0)
        row_max = tl.max(max_lanes, axis=0)
        row_sum = tl.sum(sum_lanes * tl.exp(max_lanes - row_max), axis=0)
        lse = row_max + tl.log(row_sum)
        mean_logit = tl.sum(logit_sum_lanes, axis=0) / vocab
        # The smoothing term only where there is smoothing: 0 * (lse - mean_logit) is NaN when a logit is -inf.
        smoothing = tl.where(label_smoothing != 0.0, label_smoothing * (lse - mean_logit), 0.0)
        loss = (1.0 - label_smoothing) * (lse - target_logit) + smoothing
        tl.store(loss_ptr + row, loss)

        if WRITE_GRAD:
            # softmax as exp(x - max) / sum: the exponent stays small where p is large, so p keeps fp32's
            # relative precision (exp(x - lse) would inherit the rounding of lse ~ log V).
            inv_sum = 1.0 / row_sum
            # A mean's 1 / count, applied before the one rounding to the logits' dtype. This row is counted, so the
            # count is at least 1.
            row_scale = 1.0 / tl.load(count_ptr) if MEAN else 1.0
            target_col = tl.where(in_range, target, -1).to(tl.int32)
            nan_if_bad_target = tl.where(in_range, 0.0, float("nan"))
            uniform = label_smoothing / vocab + nan_if_bad_target
            for start in range(0, vocab, BLOCK_VOCAB):
                cols = start + col_offsets
                in_row = cols < vocab
                x = tl.load(logits_row + cols, mask=in_row, other=0.0).to(tl.float32)
                p = tl.exp(x - row_max) * inv_sum
                grad = (p - uniform - tl.where(cols == target_col, 1.0 - label_smoothing, 0.0)) * row_scale
                tl.store(grad_row + cols, grad.to(grad_ptr.dtype.element_ty), mask=in_row)


@triton.jit
def _scale_grad_kernel(grad_ptr, grad_out_ptr, dlogits_ptr, grad_out_stride, vocab, BLOCK_VOCAB: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_VOCAB + tl.arange(0, BLOCK_VOCAB)
    in_row = cols < vocab
    # The row's own output gradient (stride 1, reduction none) or the one scalar (stride 0); a mean's 1 / count is
    # in the stored gradient already.
    scale = tl.load(grad_out_ptr + row * grad_out_stride).to(tl.float32)
    grad = tl.load(grad_ptr + row * vocab + cols, mask=in_row, other=0.0).to(tl.float32)
    tl.store(dlogits_ptr + row * vocab + cols, (grad * scale).to(dlogits_ptr.dtype.element_ty), mask=in_row)


def _backward(inputs, out, grad_out):
    stash = inputs["stash"]
    if bool((grad_out == 1).all()):
        # The stored gradient is the answer; it is not changed here, so a graph run twice gets it twice.
        return {"logits": stash["grad"]}
    logits = inputs["logits"]
    rows, vocab = logits.shape
    dlogits = memory.empty((rows, vocab), dtype=logits.dtype, device=logits.device)
    block, warps = vocab_block(vocab, MAX_BLOCK_VOCAB_BACKWARD)
    _scale_grad_kernel[(rows, triton.cdiv(vocab, block))](
        stash["grad"],
        grad_out,
        dlogits,
        1 if inputs["reduction"] == "none" else 0,
        vocab,
        BLOCK_VOCAB=block,
        num_warps=warps,
    )
    return {"logits": dlogits}


@register(
    op="cross_entropy", name="fused", version="1.1.2", dtypes=FLOATS, modes=MODES, backward=_backward, backward_reads=()
)
def cross_entropy_fused(logits, target, ignore_index, label_smoothing, reduction, *, out, stash):
    """Online logsumexp per row, and the row's gradient written in the same program."""
    rows, vocab = logits.shape
    # The dispatcher passes a stash only when a backward will follow; without one, the second loop and the
    # [T, V] gradient buffer are skipped.
    write_grad = stash is not None
    # The gradient is kept in the logits' dtype (half the memory of fp32 for half types). Backward's scaling, where
    # the output gradient is not 1, rounds it once more: two roundings stay within 2**-10 relative for fp16, inside
    # its table rtol of 1e-3.
    grad = memory.empty((rows, vocab) if write_grad else (1,), dtype=logits.dtype, device=logits.device)
    losses = out if reduction == "none" else memory.empty((rows,), dtype=torch.float32, device=logits.device)
    mean_grad = write_grad and reduction == "mean"
    # The gradient of a mean needs the count of rows before the first row's gradient is written.
    count = count_rows(target, ignore_index) if mean_grad else losses
    block, warps = vocab_block(vocab, MAX_BLOCK_VOCAB)
    _cross_entropy_fused_kernel[(rows,)](
        logits,
        target,
        losses,
        grad,
        count,
        logits.stride(0),
        target.stride(0),
        vocab,
        ignore_index,
        float(label_smoothing),
        WRITE_GRAD=write_grad,
        MEAN=mean_grad,
        BLOCK_VOCAB=block,
        num_warps=warps,
    )
    if reduction != "none":
        reduce_rows(losses, target, out, ignore_index, reduction)
    if write_grad:
        stash["grad"] = grad
    return out
