"""Variants of the matmul op (spec: kernels/ops/matmul.py)."""
