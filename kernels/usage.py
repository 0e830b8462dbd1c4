"""Which variants the current test exercised, recorded where a variant is resolved or launched.

tests/ledger.py keys each test's ledger entry on the variants it ran, so that a test reruns when one of them
changes and is skipped (with ``--changed``) when none did. The entry points (``dispatch.run``,
``dispatch.call_forward``, the registry's look-ups) report here; the plugin clears the record as each test starts
and reads it as the test ends. Recording is a set insertion, so it costs nothing measurable on a launch.
"""

from __future__ import annotations

CATALOGUE = "*"
"""Recorded by a caller that read every variant (``registry.all_variants``): its result may depend on any of them."""

_seen: set[str] = set()


def used(*variants) -> None:
    """Note that these variants (``registry.Variant``) were resolved or launched."""
    _seen.update(v.key for v in variants)


def used_catalogue() -> None:
    """Note that the whole catalogue was read, so a change to any variant concerns the caller."""
    _seen.add(CATALOGUE)


def take() -> set[str]:
    """The variant keys (and CATALOGUE) recorded since the last call, clearing the record."""
    seen = set(_seen)
    _seen.clear()
    return seen
