"""Crash points on the write path, for the fault-injection tests.

With ``crash_at`` set (``SIGNALBRIDGE_CRASH_AT``), the process kills itself with SIGKILL
the first time it reaches that step: no cleanup, no flush, as a power cut or the OOM killer
would. Unset (always, outside those tests) a crash point costs one comparison.

The steps, in the order a signal passes them:

- ``stored``: the delivery is in the inbox, nothing else has happened;
- ``intent``: the order intent is committed, the broker has not been called;
- ``accepted``: the broker accepted (and, on paper, filled) the order, nothing recorded;
- ``recorded``: the fill is in the ledger; for a signal whose last fill succeeded the
  outcome is stored with it (in the same statement or block), otherwise not yet.

A delivery's writes share commits (:class:`app.database.Pending`), so at ``stored``,
``recorded`` and, with a paper broker, ``intent`` and ``accepted`` they may not be on disk
yet.
:func:`crash_after` crashes once they are: the state with the most done and nothing after
it. A crash before they are on disk leaves the state of a crash at the step before, which
is tested on its own.
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from app.database import Pending

CrashStep = Literal["stored", "intent", "accepted", "recorded"]


def crash_point(step: CrashStep, crash_at: CrashStep | None) -> None:
    if step == crash_at:
        os.kill(os.getpid(), signal.SIGKILL)


async def crash_after(step: CrashStep, crash_at: CrashStep | None, pending: Pending) -> None:
    """:func:`crash_point`, once the writes in ``pending`` are durable."""
    if step == crash_at:
        await pending.durable()
        crash_point(step, crash_at)
