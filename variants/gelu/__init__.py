"""Variants of the gelu op (spec: kernels/ops/gelu.py)."""
