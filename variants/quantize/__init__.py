"""Variants of the quantize op (spec: kernels/ops/quantize.py)."""
