"""The fault-injection suite: real installer processes SIGKILLed at named kill points."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # Registered here, beside the tests it marks; `pytest -m "not faults"` skips the slow part
    # for a quick local loop (CI runs everything).
    config.addinivalue_line("markers", "faults: SIGKILLs real installer processes (~1 min)")
