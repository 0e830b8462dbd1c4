"""Variants of the softmax op (spec: kernels/ops/softmax.py)."""
