"""The rotation both rope variants apply to a tile of rows (an underscore module: it registers nothing)."""

import triton
import triton.language as tl


@triton.jit
def rotate_halves(
    x_rows, pos, d, half, mask, cos_ptr, sin_ptr,
    stride_xd, stride_cos_s, stride_cos_d, stride_sin_s, stride_sin_d, TRANSPOSE: tl.constexpr,
):  # fmt: skip
    """Both halves of ``x * cos + rotate_half(x) * sin`` in fp32 for the rows at ``x_rows`` (positions ``pos``)."""
    x1 = tl.load(x_rows + d[None, :] * stride_xd, mask=mask).to(tl.float32)
    x2 = tl.load(x_rows + (d[None, :] + half) * stride_xd, mask=mask).to(tl.float32)
    cos_rows = cos_ptr + pos[:, None] * stride_cos_s
    sin_rows = sin_ptr + pos[:, None] * stride_sin_s
    cos1 = tl.load(cos_rows + d[None, :] * stride_cos_d, mask=mask).to(tl.float32)
    cos2 = tl.load(cos_rows + (d[None, :] + half) * stride_cos_d, mask=mask).to(tl.float32)
    sin1 = tl.load(sin_rows + d[None, :] * stride_sin_d, mask=mask).to(tl.float32)
    sin2 = tl.load(sin_rows + (d[None, :] + half) * stride_sin_d, mask=mask).to(tl.float32)
    if TRANSPOSE:
        # The gradient is the transposed map: each half's sine moves to the other half and changes sign. With
        # rotary tables, whose halves are equal, that is the rotation by -sin.
        sin1, sin2 = -sin2, -sin1
    # x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1].
    return x1 * cos1 - x2 * sin1, x2 * cos2 + x1 * sin2
