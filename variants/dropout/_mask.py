"""The keep mask both dropout variants draw, so the same seed gives the same mask in each. An underscore module:
it registers nothing.

Philox 4x32 makes four 32-bit numbers per evaluation. ``tl.rand`` keeps one of them, so a kernel drawing one
number per element runs Philox's ten rounds per element and is bound by that integer work, not by memory (the
seeded variant reached a third of the copy bandwidth on an H200). ``tl.rand4x`` keeps all four: element ``4g + j``
takes number ``j`` of counter ``g``, and the rounds are paid once per four elements."""

import triton
import triton.language as tl


@triton.jit
def element_offsets(pid, GROUPS: tl.constexpr):
    """The [GROUPS, 4] linear indices of program ``pid``'s elements, and their Philox counters [GROUPS]."""
    groups = pid * GROUPS + tl.arange(0, GROUPS)
    return groups[:, None] * 4 + tl.arange(0, 4)[None, :], groups


@triton.jit
def keep_mask(seed, groups, p):
    """Keep (True) or drop each element of the [GROUPS, 4] tile whose Philox counters are ``groups``: its uniform
    number in [0, 1) is at least ``p``."""
    r0, r1, r2, r3 = tl.rand4x(seed, groups)
    lane = tl.arange(0, 4)[None, :]
    r = tl.where(
        lane == 0, r0[:, None], tl.where(lane == 1, r1[:, None], tl.where(lane == 2, r2[:, None], r3[:, None]))
    )
    return r >= p
