"""Variants of the dequantize op (spec: kernels/ops/dequantize.py)."""
