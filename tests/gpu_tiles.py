"""pytest plugin: run the variants, under the interpreter, with the tiles and autotune configs they pick for a GPU.

    TRITON_INTERPRET=1 python -m pytest -p tests.gpu_tiles tests/test_correctness.py -k attention

Under the interpreter the variants shrink their tiles and keep one autotune config (they ask
``kernels.backend.interpreting()``). That keeps the suite fast, but a CPU run then never sees the GPU's tile choices.
With this plugin, ``interpreting()`` answers False to code in the ``variants`` package only, so every kernel runs
with its GPU tiles and every config, still interpreted and still bounds-checked (``kernels/bounds.py``). The
framework keeps seeing the interpreter.

It is a diagnostic, not part of the suite: it is slower, and a variant that works around an interpreter gap only
under the interpreter (fp8 attention's rounding of P) fails here for that gap.
"""

from __future__ import annotations

import sys

import pytest


def answers_false_to(module: str) -> bool:
    """Whether ``interpreting()`` called from ``module`` answers False under this plugin."""
    return module == "variants" or module.startswith("variants.")


def pytest_configure(config: pytest.Config) -> None:
    from kernels import backend

    real = backend.interpreting

    def interpreting() -> bool:
        caller = sys._getframe(1).f_globals.get("__name__", "")
        return False if answers_false_to(caller) else real()

    backend.interpreting = interpreting
