"""Variants of the lora_linear op (spec: kernels/ops/lora_linear.py)."""
