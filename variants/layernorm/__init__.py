"""Variants of the layernorm op (spec: kernels/ops/layernorm.py)."""
