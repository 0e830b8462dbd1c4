"""Variants of the dropout op (spec: kernels/ops/dropout.py)."""
