"""The input factory helpers shared by every op spec."""

from __future__ import annotations

import torch

from kernels import spec


def test_random_inputs_are_never_zero_after_the_cast() -> None:
    # 3e-8 is below fp16's smallest subnormal (6e-8): it would round to 0 after a cast.
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        x = spec.randn((1 << 16,), dtype, "cpu", g, scale=3e-8)
        assert (x != 0).all(), dtype
