"""Variants of the int8_matmul op (spec: kernels/ops/int8_matmul.py)."""
