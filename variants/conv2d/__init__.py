"""Variants of the conv2d op (spec: kernels/ops/conv2d.py)."""
