"""Variants of the cross_entropy op (spec: kernels/ops/cross_entropy.py)."""
