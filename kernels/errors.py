"""Errors a caller can act on. Each message names the argument and the problem."""


class KernelInputError(ValueError):
    """Bad input to a public op: device, dtype, shape, layout or size."""


class UnsupportedError(KernelInputError):
    """Valid input that this variant does not handle (dtype, shape limit, GPU generation); another may."""


class VariantImportError(ImportError):
    """A file under variants/ failed to import. Never swallowed: a broken variant must not vanish silently."""


class RegistrationError(ValueError):
    """A variant's contract is malformed (unknown op, bad version, duplicate name, wrong folder)."""
