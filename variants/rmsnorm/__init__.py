"""Variants of the rmsnorm op (spec: kernels/ops/rmsnorm.py)."""
