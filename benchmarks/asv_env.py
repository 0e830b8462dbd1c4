"""An asv environment plugin (named in asv.conf.json): the running interpreter, under one pinned name.

asv's own ``existing`` environment names itself after the interpreter's path, so the same GPU model on two
runners (or one runner after an image update) would start a new series. Here the name is fixed: the series is
keyed by the machine name (the GPU model, set by the nox sessions) alone. Like ``existing``, it installs nothing;
the nox sessions put the commit under test on PYTHONPATH.
"""

from __future__ import annotations

from asv.environment import ExistingEnvironment as _Existing

ENV_NAME = "kernelwatch"


class _PinnedEnvironment(_Existing):
    tool_name = "kernelwatch"

    @property
    def name(self) -> str:
        return ENV_NAME
