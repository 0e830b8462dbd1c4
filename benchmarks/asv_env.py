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

    def __init__(self, conf, executable, requirements, tagged_env_vars):
        super().__init__(conf, executable, requirements, tagged_env_vars)
        # asv records the interpreter as given (a path) among the series' keys; keep only its version.
        self._python = self._python_version

    @property
    def _python_version(self) -> str:
        return self.run(["-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"]).strip()

    @property
    def name(self) -> str:
        return ENV_NAME
