"""Variants of the attention op (spec: kernels/ops/attention.py)."""
