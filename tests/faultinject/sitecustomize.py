"""Fault injection for tests/test_faults.py, loaded by every Python process started with this folder on PYTHONPATH.

With ``TADA_KILL_AT_REPLACE=<text>`` set, a pipeline stage (``python -m pipelines.<stage>``, not DVC itself) kills
itself with SIGKILL at the moment it would move a finished temporary onto an output whose path contains ``<text>``
(a file renamed with ``os.replace``, a directory swapped by ``tada.io._exchange``): the new content is complete on
disk, nothing of it is in place yet.

With ``TADA_LOG_REPLACE=<file>`` set, a stage appends the absolute path of every such move's destination to that file
before it makes the move: a test that kills a run at a chosen time can tell a kill in the middle of the stage's work
from one that came after the stage had begun to put its outputs in place.
"""

import importlib.abc
import os
import signal
import sys

_target = os.environ.get("TADA_KILL_AT_REPLACE")
_log = os.environ.get("TADA_LOG_REPLACE")


def _in_stage() -> bool:
    main = getattr(sys.modules.get("__main__"), "__spec__", None)
    return main is not None and main.name.startswith("pipelines.")


def _dying(move):
    def move_or_die(src, dst, *args, **kwargs):
        if _in_stage():
            if _log:
                with open(_log, "a") as log:
                    log.write(os.path.abspath(os.fspath(dst)) + "\n")
            if _target and _target in os.fspath(dst):
                os.kill(os.getpid(), signal.SIGKILL)
        return move(src, dst, *args, **kwargs)

    return move_or_die


class _PatchIo(importlib.abc.MetaPathFinder):
    """Wrap tada.io._exchange once tada.io is imported."""

    def find_spec(self, name, path, target=None):
        if name != "tada.io":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            module._exchange = _dying(module._exchange)

        spec.loader.exec_module = exec_module
        return spec


if _target or _log:
    import importlib.util

    os.replace = _dying(os.replace)
    sys.meta_path.insert(0, _PatchIo())
