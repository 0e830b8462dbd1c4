"""The Triton versions kernelwatch supports, and what each needs beside it to run the interpreter suite.

One place, read by the ``tests-triton`` nox session (which installs each version with its pins) and by the
support matrix (``docs/support-matrix.md``). Plain data with no imports, so that the noxfile can load it
without torch. The pins come from running the suite on each version, not from guesses. Each one says why.
"""

# version -> extra requirements installed with it, each with the reason it is needed.
VERSIONS: dict[str, dict[str, str]] = {
    "3.6.0": {
        "numpy<2.4": "its interpreter calls int() on one-element arrays, which numpy 2.4 made a TypeError "
        "(https://github.com/triton-lang/triton/issues/9171, fixed for 3.7 by pull request 9172)",
    },
    "3.7.1": {},
    "3.8.0": {},
    "3.9.0": {},
}

NEWEST = "3.9.0"
"""The version ``tests-cpu`` runs, and the one CI's matrix subset always includes."""

CI_SUBSET = ("3.6.0", NEWEST)
"""The versions CI runs in full on each push (the oldest and the newest); ``nox -s tests-triton`` runs them all."""
