"""Bounds checking for Triton's interpreter: catch on a CPU what would be an illegal memory access on a GPU.

Under ``TRITON_INTERPRET=1`` a load or store through a pointer past the end of its tensor reads or writes whatever
host memory lies there, so the test passes on a CPU and the kernel then dies on a GPU with "an illegal memory
access was encountered" (or, worse, quietly reads its neighbour's data, since the caching allocator packs tensors
side by side). With ``check()`` active, every launch records the byte ranges of the tensors passed to it, and every
load, store and atomic that is not masked off must fall wholly inside one of them. One that does not raises
``OutOfBounds``, naming the kernel, the operation, how many lanes strayed and where the first one points.

The tests turn it on for every interpreted run (``tests/conftest.py``). It patches two interpreter classes, so it
checks the Triton versions whose interpreter has them (3.x) and refuses loudly where they are missing.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

_state = threading.local()


class OutOfBounds(RuntimeError):
    """A load, store or atomic in an interpreted kernel touched memory outside every tensor passed to the launch."""


class _Launch:
    """One launch's tensors, sorted by start address once, so that each load and store only searches them."""

    def __init__(self, kernel: str, ranges: list[tuple[int, int, str]]):
        self.kernel = kernel
        self.ranges = sorted(ranges)
        self.starts = np.array([r[0] for r in self.ranges], dtype=np.uint64)
        # Storages can overlap (views of one buffer): the widest end among the tensors that start at or before an
        # address, a running maximum over the sorted starts, is how far that address may go.
        self.reach = np.maximum.accumulate(np.array([r[1] for r in self.ranges], dtype=np.uint64))


def _tensor_ranges(args, kwargs) -> list[tuple[int, int, str]]:
    found: list[tuple[int, int, str]] = []

    def visit(value, name):
        if isinstance(value, tuple | list):
            for i, item in enumerate(value):
                visit(item, f"{name}[{i}]")
            return
        base = getattr(value, "base", None)
        if base is not None and hasattr(base, "data_ptr") and not hasattr(value, "data_ptr"):
            visit(base, f"{name}.base")  # a TensorDescriptor
            return
        if not hasattr(value, "untyped_storage"):
            return
        storage = value.untyped_storage()
        start = storage.data_ptr()
        found.append((start, start + storage.nbytes(), name))

    for i, arg in enumerate(args):
        visit(arg, f"argument {i}")
    for key, arg in kwargs.items():
        visit(arg, key)
    return found


def _check(what: str, addresses: np.ndarray, lanes: np.ndarray, itemsize: int) -> None:
    launch = getattr(_state, "launch", None)
    if launch is None or not launch.ranges:
        return  # a launch this module did not see (e.g. started before check()): nothing to compare with
    addresses = np.asarray(addresses)
    lanes = np.broadcast_to(np.asarray(lanes, dtype=bool), addresses.shape)
    wanted = addresses[lanes].astype(np.uint64, copy=False).ravel()
    if wanted.size == 0:
        return
    idx = np.searchsorted(launch.starts, wanted, side="right") - 1
    inside = (idx >= 0) & (wanted + np.uint64(itemsize) <= launch.reach[np.clip(idx, 0, None)])
    if inside.all():
        return
    bad = wanted[~inside]
    first = int(bad[0])
    near = min(launch.ranges, key=lambda r: min(abs(first - r[0]), abs(first - r[1])))
    where = (
        f"{first - near[1]} bytes past the end of {near[2]} ({near[1] - near[0]} bytes)"
        if first >= near[1]
        else f"{near[0] - first} bytes before the start of {near[2]}"
    )
    raise OutOfBounds(
        f"{launch.kernel}: {what} of {bad.size} unmasked lane(s) outside every tensor passed to the launch; the "
        f"first is {where}. On a GPU this is an illegal memory access (or a silent read of another tensor)."
    )


@contextlib.contextmanager
def check():
    """Bounds-check every interpreted launch inside the block (nests; restores the interpreter on exit)."""
    from triton.runtime import interpreter

    builder_cls = getattr(interpreter, "InterpreterBuilder", None)
    executor_cls = getattr(interpreter, "GridExecutor", None)
    if builder_cls is None or executor_cls is None or not hasattr(executor_cls, "_init_args_hst"):
        raise RuntimeError("kernels.bounds: this Triton's interpreter has no InterpreterBuilder/GridExecutor to patch")
    if getattr(executor_cls, "_kernelwatch_bounds", False):
        yield
        return

    saved = {
        "init": executor_cls._init_args_hst,
        "call": executor_cls.__call__,
        "load": builder_cls.create_masked_load,
        "store": builder_cls.create_masked_store,
        "rmw": builder_cls.create_atomic_rmw,
        "cas": builder_cls.create_atomic_cas,
    }

    def init_args(self, args_dev, kwargs):
        args_hst, kwargs_hst = saved["init"](self, args_dev, kwargs)
        _state.launch = _Launch(getattr(self.fn, "__name__", "kernel"), _tensor_ranges(args_hst, kwargs_hst))
        return args_hst, kwargs_hst

    def call(self, *args, **kwargs):
        outer = getattr(_state, "launch", None)
        try:
            return saved["call"](self, *args, **kwargs)
        finally:
            _state.launch = outer

    def itemsize(ptrs) -> int:
        return int(np.dtype(interpreter._get_np_dtype(ptrs.get_element_ty())).itemsize)

    # Tensor-descriptor loads and stores reach these too, passing some arguments by keyword.
    def load(self, ptrs, mask, other, *rest, **options):
        _check("load", ptrs.data, mask.data, itemsize(ptrs))
        return saved["load"](self, ptrs, mask, other, *rest, **options)

    def store(self, ptrs, value, mask, *rest, **options):
        _check("store", ptrs.data, mask.data, itemsize(ptrs))
        return saved["store"](self, ptrs, value, mask, *rest, **options)

    def rmw(self, op, ptr, val, mask, *rest):
        _check("atomic", ptr.data, mask.data, itemsize(ptr))
        return saved["rmw"](self, op, ptr, val, mask, *rest)

    def cas(self, ptr, cmp, val, *rest):
        _check("atomic_cas", ptr.data, np.ones(np.shape(ptr.data), dtype=bool), itemsize(ptr))
        return saved["cas"](self, ptr, cmp, val, *rest)

    executor_cls._init_args_hst = init_args
    executor_cls.__call__ = call
    builder_cls.create_masked_load = load
    builder_cls.create_masked_store = store
    builder_cls.create_atomic_rmw = rmw
    builder_cls.create_atomic_cas = cas
    executor_cls._kernelwatch_bounds = True
    try:
        yield
    finally:
        executor_cls._init_args_hst = saved["init"]
        executor_cls.__call__ = saved["call"]
        builder_cls.create_masked_load = saved["load"]
        builder_cls.create_masked_store = saved["store"]
        builder_cls.create_atomic_rmw = saved["rmw"]
        builder_cls.create_atomic_cas = saved["cas"]
        executor_cls._kernelwatch_bounds = False
