"""The app factory: what is built, and what is not."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import CONFIG

PAPER_ONLY = f"""
import sys
from app.application import build_brokers, create_app, system_clock
from app.settings import load_settings
settings = load_settings({str(CONFIG)!r})
create_app(settings)
brokers, _ = build_brokers(settings, clock=system_clock)
assert set(brokers) == {{"demo-paper"}}, brokers
loaded = sorted(name for name in sys.modules if name.split(".")[0] == "ccxt")
print(loaded)
"""


def test_a_paper_only_service_never_imports_ccxt() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PAPER_ONLY], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
