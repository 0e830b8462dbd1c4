"""Kernel versioning: the lock matches the code, and an edit without a version bump is caught."""

from __future__ import annotations

import pytest

from kernels import registry, versioning
from tests.tree import copy_checkout

registry.discover()


@pytest.mark.parametrize("variant", registry.all_variants(), ids=lambda v: f"{v.key}-v{v.version}")
def test_lock_is_current(variant: registry.Variant) -> None:
    problem = versioning.check(variant, versioning.read_lock())
    assert problem is None, problem


def test_lock_has_no_stale_entries() -> None:
    stale = set(versioning.read_lock()) - {v.key for v in registry.all_variants()}
    assert not stale, f"{sorted(stale)} are locked but not registered: run `nox -s lock`"


def test_version_and_fingerprint_are_reachable_from_code() -> None:
    v = registry.get("matmul", "splitk")
    assert v.version == versioning.read_lock()[v.key].version
    assert v.fingerprint == versioning.read_lock()[v.key].fingerprint


def test_fingerprint_covers_kernels_launcher_backward_and_helpers() -> None:
    source = versioning.fingerprint_source(registry.get("softmax", "fused"))
    assert "@triton.jit" in source  # the jitted kernel, reached from the launcher
    assert "def softmax_backward" in source  # the backward, from a helper module
    assert "register(" not in source  # the contract and version are not part of it


@pytest.mark.slow
def test_editing_a_kernel_without_a_bump_fails_until_bumped_and_locked(tmp_path) -> None:
    tree = copy_checkout(tmp_path)
    assert tree.run("-m", "kernels", "lock", "--check").returncode == 0

    # A comment or docstring edit is not a kernel change.
    tree.edit("variants/add/naive.py", "    pid = tl.program_id(0)\n", "    pid = tl.program_id(0)  # which block\n")
    assert tree.run("-m", "kernels", "lock", "--check").returncode == 0

    # A change inside the jitted kernel is.
    tree.edit("variants/add/naive.py", "mask = offsets < n", "mask = (offsets < n) & (offsets >= 0)")
    check = tree.run("-m", "kernels", "lock", "--check")
    assert check.returncode == 1
    assert "add.naive: its kernel source changed" in check.stderr
    assert "Bump version= in" in check.stderr and "variants/add/naive.py" in check.stderr
    assert "then run `nox -s lock`" in check.stderr
    suite = tree.run(
        "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_versioning.py", "-k", "lock_is_current"
    )
    assert suite.returncode == 1 and "its kernel source changed" in suite.stdout

    # `lock` refuses to paper over it ...
    refused = tree.run("-m", "kernels", "lock")
    assert refused.returncode == 1 and "refusing" in refused.stderr
    # ... and accepts once the version moves.
    tree.edit("variants/add/naive.py", 'version="1.0.0"', 'version="1.0.1"')
    tree.run("-m", "kernels", "lock", check=True)
    assert tree.run("-m", "kernels", "lock", "--check").returncode == 0
    assert 'version = "1.0.1"' in (tree.path / "variants.lock").read_text()


@pytest.mark.slow
def test_a_module_constant_is_part_of_the_fingerprint(tmp_path) -> None:
    tree = copy_checkout(tmp_path)
    tree.edit("variants/add/naive.py", "BLOCK = 1024", "BLOCK = 512")
    check = tree.run("-m", "kernels", "lock", "--check")
    assert check.returncode == 1 and "add.naive: its kernel source changed" in check.stderr


def test_a_corrupt_lock_gives_a_clear_error(tmp_path) -> None:
    bad = tmp_path / "variants.lock"
    bad.write_text('[variant."add.naive"\nversion = ')
    with pytest.raises(ValueError, match="not valid TOML"):
        versioning.read_lock(bad)


def test_lock_is_written_atomically(tmp_path) -> None:
    path = tmp_path / "variants.lock"
    versioning.write_lock(registry.all_variants(), path)
    assert versioning.read_lock(path).keys() == {v.key for v in registry.all_variants()}
    assert not list(tmp_path.glob("*.tmp"))
