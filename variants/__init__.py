"""Kernel variants, one file each: ``variants/<op>/<variant>.py``. Discovered by kernels.registry.discover()."""
