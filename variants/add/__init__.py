"""Variants of the add op (spec: kernels/ops/add.py)."""
