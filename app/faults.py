"""Crash points on the write path, for the fault-injection tests.

With ``crash_at`` set (``SIGNALBRIDGE_CRASH_AT``), the process kills itself with SIGKILL
the first time it reaches that step: no cleanup, no flush, as a power cut or the OOM killer
would. Unset (always, outside those tests) a crash point costs one comparison.

The steps, in the order a signal passes them:

- ``stored``: the delivery is in the inbox, nothing else has happened;
- ``intent``: the order intent is committed, the broker has not been called;
- ``accepted``: the broker accepted (and, on paper, filled) the order, nothing recorded;
- ``recorded``: the fill is in the ledger, the event's outcome is not yet stored.
"""

from __future__ import annotations

import os
import signal
from typing import Literal

CrashStep = Literal["stored", "intent", "accepted", "recorded"]


def crash_point(step: CrashStep, crash_at: CrashStep | None) -> None:
    if step == crash_at:
        os.kill(os.getpid(), signal.SIGKILL)
