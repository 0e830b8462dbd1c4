"""Variants of the windowed_rope_attention op (spec: kernels/ops/windowed_rope_attention.py)."""
