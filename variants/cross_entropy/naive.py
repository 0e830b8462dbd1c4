"""cross_entropy, naive: the softmax materialized. A first kernel writes every row's probabilities to an fp32
[T, V] buffer (three passes over the row: max, sum of exponentials, normalize); a second reads each row's
target probability (and, with label smoothing, every probability's log) to form the loss. Backward reads the
stored probabilities: the gradient is ``p - (1 - eps) * onehot(t) - eps / V``, times the output gradient."""

import torch
import triton
import triton.language as tl

from kernels import memory
from kernels.dtypes import FLOATS
from kernels.registry import register
from variants.cross_entropy._common import reduce_rows, row_grad_scale, vocab_block

MAX_BLOCK_VOCAB = 1024
MODES = ("mean", "sum", "none", "smoothing")


@triton.jit
def _softmax_rows_kernel(logits_ptr, probs_ptr, logits_row_stride, vocab, BLOCK_VOCAB: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    logits_row = logits_ptr + row * logits_row_stride
    probs_row = probs_ptr + row * vocab
    col_offsets = tl.arange(0, BLOCK_VOCAB)

    max_lanes = tl.full([BLOCK_VOCAB], float("-inf"), dtype=tl.float32)
    for start in range(0, vocab, BLOCK_VOCAB):
        cols = start + col_offsets
        x = tl.load(logits_row + cols, mask=cols < vocab, other=float("-inf")).to(tl.float32)
        max_lanes = tl.maximum(max_lanes, x)
    row_max = tl.max(max_lanes, axis=0)

    sum_lanes = tl.zeros([BLOCK_VOCAB], dtype=tl.float32)
    for start in range(0, vocab, BLOCK_VOCAB):
        cols = start + col_offsets
        # Padding reads -inf and adds exp(-inf) = 0.
        x = tl.load(logits_row + cols, mask=cols < vocab, other=float("-inf")).to(tl.float32)
        sum_lanes += tl.exp(x - row_max)
    inv_sum = 1.0 / tl.sum(sum_lanes, axis=0)

    for start in range(0, vocab, BLOCK_VOCAB):
        cols = start + col_offsets
        in_row = cols < vocab
        x = tl.load(logits_row + cols, mask=in_row, other=0.0).to(tl.float32)
        tl.store(probs_row + cols, tl.exp(x - row_max) * inv_sum, mask=in_row)


@triton.jit
def _loss_rows_kernel(
    probs_ptr,
    target_ptr,
    loss_ptr,
    target_stride,
    vocab,
    ignore_index,
    label_smoothing,
    SMOOTHING: tl.constexpr,
    BLOCK_VOCAB: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    probs_row = probs_ptr + row * vocab
    target = tl.load(target_ptr + row * target_stride)
    # A target out of range reads nothing and yields NaN: a bad label shows in the loss instead of reading
    # another row's memory.
    in_range = (target >= 0) & (target < vocab)
    p_target = tl.load(probs_row + tl.where(in_range, target, 0), mask=in_range, other=float("nan"))
    loss = -(1.0 - label_smoothing) * tl.log(p_target)
    if SMOOTHING:
        # The smoothed part is the mean of -log p over the vocabulary.
        col_offsets = tl.arange(0, BLOCK_VOCAB)
        log_sum_lanes = tl.zeros([BLOCK_VOCAB], dtype=tl.float32)
        for start in range(0, vocab, BLOCK_VOCAB):
            cols = start + col_offsets
            # Padding reads p = 1, whose log adds 0.
            log_sum_lanes += tl.log(tl.load(probs_row + cols, mask=cols < vocab, other=1.0))
        loss -= label_smoothing * tl.sum(log_sum_lanes, axis=0) / vocab
    tl.store(loss_ptr + row, tl.where(target == ignore_index, 0.0, loss))


@triton.jit
def _backward_kernel(
    probs_ptr,
    target_ptr,
    grad_out_ptr,
    count_ptr,
    dlogits_ptr,
    target_stride,
    grad_out_stride,
    vocab,
    ignore_index,
    label_smoothing,
    MEAN: tl.constexpr,
    BLOCK_VOCAB: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_VOCAB + tl.arange(0, BLOCK_VOCAB)
    in_row = cols < vocab
    target = tl.load(target_ptr + row * target_stride)
    scale = row_grad_scale(grad_out_ptr, count_ptr, row, grad_out_stride, MEAN)
    scale = tl.where(target == ignore_index, 0.0, scale)
    # A bad target poisons its row of the gradient, as it does its loss.
    in_range = (target >= 0) & (target < vocab)
    scale = tl.where(in_range | (target == ignore_index), scale, float("nan"))
    target_col = tl.where(in_range, target, -1).to(tl.int32)
    p = tl.load(probs_ptr + row * vocab + cols, mask=in_row, other=0.0)
    grad = p - label_smoothing / vocab - tl.where(cols == target_col, 1.0 - label_smoothing, 0.0)
    tl.store(dlogits_ptr + row * vocab + cols, (grad * scale).to(dlogits_ptr.dtype.element_ty), mask=in_row)


def _backward(inputs, out, grad_out):
    logits, target, stash = inputs["logits"], inputs["target"], inputs["stash"]
    rows, vocab = logits.shape
    dlogits = memory.empty((rows, vocab), dtype=logits.dtype, device=logits.device)
    block, warps = vocab_block(vocab, MAX_BLOCK_VOCAB)
    reduction = inputs["reduction"]
    _backward_kernel[(rows, triton.cdiv(vocab, block))](
        stash["probs"],
        target,
        grad_out,
        stash.get("count", grad_out),
        dlogits,
        target.stride(0),
        1 if reduction == "none" else 0,
        vocab,
        inputs["ignore_index"],
        float(inputs["label_smoothing"]),
        MEAN=reduction == "mean",
        BLOCK_VOCAB=block,
        num_warps=warps,
    )
    return {"logits": dlogits}


@register(op="cross_entropy", name="naive", version="1.0.0", dtypes=FLOATS, modes=MODES, backward=_backward)
def cross_entropy_naive(logits, target, ignore_index, label_smoothing, reduction, *, out, stash):
    """Probabilities written to memory, then the loss from them; backward from the stored probabilities."""
    rows, vocab = logits.shape
    label_smoothing = float(label_smoothing)
    probs = memory.empty((rows, vocab), dtype=torch.float32, device=logits.device)
    block, warps = vocab_block(vocab, MAX_BLOCK_VOCAB)
    _softmax_rows_kernel[(rows,)](logits, probs, logits.stride(0), vocab, BLOCK_VOCAB=block, num_warps=warps)
    losses = out if reduction == "none" else memory.empty((rows,), dtype=torch.float32, device=logits.device)
    _loss_rows_kernel[(rows,)](
        probs,
        target,
        losses,
        target.stride(0),
        vocab,
        ignore_index,
        label_smoothing,
        SMOOTHING=label_smoothing != 0,
        BLOCK_VOCAB=block,
        num_warps=warps,
    )
    count = reduce_rows(losses, target, out, ignore_index, reduction) if reduction != "none" else None
    if stash is not None:
        stash["probs"] = probs
        if count is not None:
            stash["count"] = count
    return out
