"""Variants of the rope op (spec: kernels/ops/rope.py)."""
