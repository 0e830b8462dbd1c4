"""Which rows the softmax forward (autotuned) and backward cut into spans, and where they cut them. An underscore
module: it registers nothing.

One program per row leaves most of the GPU idle when there are few rows, however long they are: at 256x131072
bf16 on an H200 the online kernel reaches half the copy bandwidth. Cutting rows into spans gives (row, span)
programs enough to fill it, at the cost of a second launch and of x read back from memory by a second kernel.

The cut is rmsnorm's (variants/rmsnorm/autotuned.py). rmsnorm keeps its own copy: importing this one would move
its fingerprint (the fingerprint names the module a helper lives in) with no change to its kernels.
"""

import triton

# Up to this many columns one program per row stays: such a row cuts into at most 4 spans, so spans would at most
# quadruple the programs, for a second launch and a second read of x from memory, where the one-program kernel
# re-reads a row of at most 64 KiB (fp32) that its first pass has just brought into L2. rmsnorm cuts here too.
ONE_PASS_MAX_COLS = 16384
# Spans are whole multiples of the widest block the span kernels use, so every block tiles them exactly.
SPAN_GRANULE = 4096
# A few waves of the 132 SMs of an H100. With at least this many rows, one program per row already fills the GPU.
TARGET_PROGRAMS = 8 * 132


def takes_spans(rows, cols):
    """Whether rows are long and few enough for spans; then ``row_spans`` cuts each into at least 2."""
    return cols > ONE_PASS_MAX_COLS and rows < TARGET_PROGRAMS


def row_spans(rows, cols):
    """(span length, spans per row): as few spans of whole SPAN_GRANULEs as give about TARGET_PROGRAMS programs."""
    granules = triton.cdiv(cols, SPAN_GRANULE)
    spans = max(1, min(granules, triton.cdiv(TARGET_PROGRAMS, rows)))
    span_cols = triton.cdiv(granules, spans) * SPAN_GRANULE
    # Rounding the span up can leave the last spans empty; drop them, so every span has columns to write.
    return span_cols, triton.cdiv(cols, span_cols)
