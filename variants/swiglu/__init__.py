"""Variants of the swiglu op (spec: kernels/ops/swiglu.py)."""
