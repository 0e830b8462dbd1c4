"""Peer baselines for the bench command, declared on op specs. A peer that is not installed is left out."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def liger(adapt: Callable[[object], Callable]) -> Callable[[], Callable | None]:
    """A Liger-Kernel peer: ``adapt(liger_kernel.transformers.functional)`` returns a callable taking the op's
    inputs as keyword arguments. None (left out of the table) when Liger-Kernel is not installed."""

    def factory() -> Callable | None:
        try:
            functional = importlib.import_module("liger_kernel.transformers.functional")
        except ImportError:
            return None
        return adapt(functional)

    return factory
