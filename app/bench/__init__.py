"""``signalbridge bench``: how fast the service answers, measured against a bare baseline.

:mod:`app.bench.command` runs it: it starts the service and the bare Starlette app of
:mod:`app.bench.baseline` in subprocesses, drives each from the load generator of
:mod:`app.bench.load` (a process of its own), checks the database with
:mod:`app.bench.database` and prints :mod:`app.bench.report`. :mod:`app.bench.inprocess`
drives the service's app in the calling process instead, without HTTP, for callgrind's
instruction counts and profiles.
"""

from __future__ import annotations


class BenchError(Exception):
    """The bench could not run: a server that did not start, a database it could not make,
    a load generator that failed. Not a failed check (those are reported, exit code 1); the
    command prints the message and exits 2. Retrying helps only once the cause is fixed."""
