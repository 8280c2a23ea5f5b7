"""Crash-test checkpoints: stop the process at a named point when a test asks for it.

``checkpoint("import:renamed")`` does nothing unless the environment variable
``PODRUN_TEST_STOP_AT`` names that point; then the process sends itself SIGSTOP, so
a test can ``kill -9`` it at exactly that moment and check that the store and pod
dirs stay consistent. The cost when unset is one dict lookup.
"""

from __future__ import annotations

import os
import signal


def checkpoint(name: str) -> None:
    if os.environ.get("PODRUN_TEST_STOP_AT") == name:
        os.kill(os.getpid(), signal.SIGSTOP)
