"""Variants of the nf4_dequantize op (spec: kernels/ops/nf4_dequantize.py)."""
