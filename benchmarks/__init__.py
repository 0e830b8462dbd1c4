"""kernelwatch's asv suite (ops.py, generated from the registry) and the tools around it (history.py)."""
